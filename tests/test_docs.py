"""The README and docs/ as a reader uses them: every command and code block they show names what
exists, every overlay they write is a valid configuration, every results path is one a run
writes, the library examples run, the links resolve and the configuration reference matches the
schema (tests/doc_examples.py says what is checked how)."""

import functools
import re
import subprocess
import sys

import pytest
import yaml

from doc_examples import (PAGES, ROOT, Block, code_blocks, command_errors, imports_resolve, inline_commands, is_overlay,
                          overlay_name, results_paths, shell_commands)

SHELL = ("bash", "sh", "shell", "console", "")
ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]


def page_overlays() -> dict[str, dict]:
    """The overlay files the pages write (a yaml block whose first line is ``# <name>.yaml``)."""
    return {overlay_name(b): yaml.safe_load(b.text) for b in ALL_BLOCKS if b.language == "yaml" and overlay_name(b)}


def test_the_readme_is_a_front_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked
    assert not re.search(r"\b[0-9a-f]{7}\b", readme), "commit hashes belong in docs/measurements.md"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", resolved.read_text(), flags=re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: link to {target}: no such heading"


def test_every_code_block_has_a_language_the_tests_know():
    known = {*SHELL, "yaml", "python", "text"}
    assert [b.where for b in ALL_BLOCKS if b.language not in known] == []


def shell_blocks() -> list[Block]:
    return [b for b in ALL_BLOCKS if b.language in SHELL] + [b for page in PAGES for b in inline_commands(page)]


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: f"{b.where}")
def test_every_command_names_targets_files_and_configurations_that_exist(block, tmp_path):
    commands = shell_commands(block.text)
    assert commands, f"{block.where}: an empty shell block"
    errors = [e for command in commands for e in command_errors(command, page_overlays(), tmp_path)]
    assert errors == [], f"{block.where}: {errors}"


def test_the_command_check_catches_a_stale_target_key_and_path(tmp_path):
    """The check above can fail: a renamed make target, a missing overlay and a renamed key."""
    overlays = {"bad.yaml": {"calibration": {"n": 4, "max_lenght": 64}}}
    assert command_errors(["make", "tests"], {}, tmp_path) == ["make tests: no such target in the Makefile"]
    assert "no such file" in command_errors(["snakemake", "--configfile", "config.yaml", "gone.yaml"], {}, tmp_path)[0]
    assert "max_lenght" in command_errors(["snakemake", "--configfile", "config.yaml", "bad.yaml"], overlays, tmp_path)[0]
    assert "neither a rule" in command_errors(["snakemake", "--", "prefetchh"], {}, tmp_path)[0]


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.language == "yaml"], ids=lambda b: b.where)
def test_every_yaml_block_is_a_valid_overlay_or_an_excerpt_of_a_repository_file(block, tmp_path):
    if is_overlay(block):
        name = overlay_name(block) or "page-overlay.yaml"
        errors = command_errors(["snakemake", "--configfile", "config.yaml", name],
                                {**page_overlays(), name: yaml.safe_load(block.text)}, tmp_path)
        assert errors == [], f"{block.where}: {errors}"
    else:
        excerpt = [line.rstrip() for line in block.text.splitlines() if line.strip()]
        files = [*(ROOT / "workflow").rglob("*.yaml"), ROOT / "config.yaml"]
        assert any(all(line in f.read_text().splitlines() for line in excerpt) for f in files), \
            f"{block.where}: neither an overlay nor lines of a file under workflow/"


@functools.cache
def dag_outputs(*configfiles: str) -> set[str]:
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", *configfiles], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-2000:]
    return {path.strip() for line in re.findall(r"^\s+output: (.+)$", dry.stdout, flags=re.M) for path in line.split(",")}


@pytest.fixture(scope="module")
def written_paths() -> set[str]:
    """Every output of the default run and of the LLM overlay: the paths a page may show."""
    return dag_outputs("config.yaml") | dag_outputs("config.yaml", "workflow/configs/llm.yaml")


def overlay_writes(path: str) -> bool:
    """Is ``path`` a slim model that a page's own overlay (docs/own-model.md) makes the workflow write?"""
    from optin.workflow.config import budget_label

    match = re.fullmatch(r"results/slim/([\w.-]+)/([\w.-]+)/([\w.-]+)/calib(\d+)-seed(\d+)/budget([\d.]+)", path)
    if not match:
        return False
    model, dataset, method, n, seed, budget = match.groups()
    for overlay in page_overlays().values():
        for experiment in overlay.get("experiments", {}).values():
            if (experiment.get("model"), experiment.get("dataset")) == (model, dataset):
                return (method in experiment.get("methods", []) and int(n) == experiment.get("calibration_n")
                        and budget in [budget_label(b) for b in experiment.get("budgets", [])] and seed == "0")
    return False


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.language == "python"], ids=lambda b: b.where)
def test_every_python_block_compiles_imports_what_exists_and_names_paths_a_run_writes(block, written_paths):
    compile(block.text, block.where, "exec")
    assert imports_resolve(block.text) == [], block.where
    for path in results_paths(block.text):
        assert path in written_paths or overlay_writes(path), f"{block.where}: no run writes {path}"


def test_the_configuration_reference_is_the_one_the_schema_generates():
    from optin.workflow.config_reference import PAGE, page_with_reference

    assert PAGE.read_text() == page_with_reference(PAGE.read_text()), "run: python -m optin.workflow.config_reference"


def test_the_readme_library_sketch_runs_on_a_tiny_bert(model):
    from conftest import padded_batch

    (block,) = [b for b in code_blocks(ROOT / "README.md") if b.language == "python"]
    namespace = {"model": model, "calibration": padded_batch()}
    exec(compile(block.text, block.where, "exec"), namespace)
    pruned = namespace["pruned"]
    assert pruned.macs["ratio"] <= 0.5 and sum(map(len, pruned.kept["head"])) < 12


def test_the_library_page_prunes_the_packaged_minilm_as_written(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForSequenceClassification

    example = next(b for b in code_blocks(ROOT / "docs/library.md") if "optin.prune(" in b.text)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example.text, example.where, "exec"), namespace)
    pruned, calibration = namespace["pruned"], namespace["calibration"]
    assert 0.49 < pruned.macs["ratio"] <= 0.5 and len(pruned.scores) == 6 * (12 + 1536)
    slim = AutoModelForSequenceClassification.from_pretrained(tmp_path / "minilm-slim", trust_remote_code=True).eval()
    masked = namespace["model"]  # the example's dense model, masked the way the search kept it
    from optin.arch import adapter_for

    expected = adapter_for(masked.eval(), "bert").masked_logits(calibration, pruned.kept)
    assert (slim(**calibration).logits - expected).abs().max() < 1e-4
    assert "'ratio': 0.49" in capsys.readouterr().out
    # the page's peer example runs on the same model and batch: Kwon et al. with their stages
    peer = next(b for b in code_blocks(ROOT / "docs/library.md") if "method=\"kwon_tuned\"" in b.text)
    exec(compile(peer.text, peer.where, "exec"), namespace)
    tuned = namespace["pruned"]
    assert tuned.method["kind"] == "kwon" and tuned.method["tune"] and 0.45 < tuned.macs["ratio"] <= 0.5
    assert len(tuned.search["unit_scales"]["neuron"]) == 6
    assert (tuned.model(**calibration).logits - tuned.adapter.masked_logits(calibration, tuned.kept)).abs().max() < 1e-4


@pytest.mark.parametrize("block", [b for b in shell_blocks() if "results/" in b.text], ids=lambda b: b.where)
def test_every_results_path_a_command_names_is_one_its_run_writes(block):
    for command in shell_commands(block.text):
        configs, targets, option = [], [], None
        for arg in command:
            if arg.startswith("-"):
                option = arg
            elif option == "--configfile" and arg.endswith((".yaml", ".yml")):
                configs.append(arg)
            elif arg.startswith("results/") and option != "--report":
                targets.append(arg)
                option = None
            else:
                option = None
        if targets:
            written = dag_outputs(*(configs or ["config.yaml"]))
            for path in targets:
                assert path in written or any(p.startswith(path + "/") for p in written), f"{block.where}: {path}"
