"""The paper tier (`pytest -m paper`, `make test-paper`): workflow/configs/paper.yaml executed for real
on stand-ins in the real on-disk formats (tests/standins.py), as a cluster user runs it: the prefetch
with the hub cache at $HF_HOME, then the compute DAG with outbound connections refused in every job
(OPTIN_OFFLINE=1). The overlay changes sizes and paths only; rules, scripts, families, methods and
figures are paper.yaml's. Also: bad inputs stop at the data rules with a message naming the key."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

import standins
from test_workflow import DEFAULT, PAPER, SNAKEMAKE, job_counts, paper_dry_run

pytestmark = [pytest.mark.paper, pytest.mark.workflow]

DOWNLOAD_RULES = {"download_model", "download_dataset", "download_weights", "download_cifar10"}


def run_snakemake(workdir: Path, overlay: Path, *args: str, env: dict, timeout: int = 1500) -> subprocess.CompletedProcess:
    """`snakemake --configfile paper.yaml <overlay>` in ``workdir`` (whose config.yaml is the default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(DEFAULT))
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OPTIN_OFFLINE")}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(PAPER), str(overlay), *args],
                          capture_output=True, text=True, timeout=timeout, env={**base, **env})


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("standins")
    overlay = standins.build(root)
    (root / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    return root, root / "overlay.yaml"


@pytest.fixture(scope="module")
def paper_run(stand_ins, tmp_path_factory) -> dict:
    """Prefetch (network rules only, the hub cache at HF_HOME), then the compute DAG offline."""
    root, overlay = stand_ins
    workdir = tmp_path_factory.mktemp("paper")
    # The stand-in cache plays the hub: the download rules read it as they read a real cache.
    prefetch = run_snakemake(workdir, overlay, "--cores", "2", "prefetch", env={"HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"})
    assert prefetch.returncode == 0, prefetch.stdout[-3000:] + prefetch.stderr[-5000:]
    compute = run_snakemake(workdir, overlay, "--cores", "2", env={"HF_HOME": str(root / "hf"), "OPTIN_OFFLINE": "1"})
    assert compute.returncode == 0, compute.stdout[-3000:] + compute.stderr[-8000:]
    return {"workdir": workdir, "prefetch": job_counts(prefetch.stderr + prefetch.stdout),
            "compute": job_counts(compute.stderr + compute.stdout)}


def paper_rules(tmp_path: Path) -> set[str]:
    """The rules of paper.yaml's own DAG (a dry run without the stand-in overlay)."""
    result = paper_dry_run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(job_counts(result.stdout))


def test_the_prefetch_runs_only_the_rules_that_reach_the_network(paper_run):
    assert set(paper_run["prefetch"]) == DOWNLOAD_RULES - {"download_cifar10"} | {"prefetch"}
    assert not DOWNLOAD_RULES & set(paper_run["compute"]), "the compute part must find every download done"


def test_every_rule_of_the_paper_dag_ran_on_the_stand_ins(paper_run, tmp_path):
    expected = paper_rules(tmp_path)
    # CIFAR-10 comes from a local copy (datasets.<id>.source.dir): torchvision's download checks the
    # real archive's MD5, which a stand-in cannot have. Every other rule of the paper DAG must run.
    assert "download_cifar10" in expected
    ran = set(paper_run["prefetch"]) | set(paper_run["compute"])
    assert ran - {"prefetch"} == expected - {"download_cifar10"}
    # each job ran the rule's own script and left its benchmark (evaluate_segmentation files its
    # benchmarks and logs beside evaluate's, under the same results paths)
    workdir = paper_run["workdir"]
    for rule in expected - {"download_cifar10", "all", "evaluate_segmentation"}:
        assert any((workdir / "benchmarks" / rule).rglob("*.tsv")), f"no benchmark of rule {rule}"
    assert list((workdir / "benchmarks/evaluate/mask2former_swin_tiny_cityscapes").rglob("*.tsv"))


def test_every_arm_of_the_paper_yields_metrics_and_figures(paper_run):
    workdir = paper_run["workdir"]
    metrics = pd.read_csv(workdir / "results/tables/metrics.csv")
    paper = yaml.safe_load(PAPER.read_text())
    for name in paper["run"]["experiments"]:
        exp = paper["experiments"][name]
        rows = metrics[(metrics["model"] == exp["model"]) & (metrics["dataset"] == exp["dataset"])]
        assert set(rows["method"]) == set(exp.get("methods", paper["run"]["methods"])), name
        assert rows["budget"].astype(float).eq(0.6).all() and len(rows) > 0, name
    provenance = (workdir / "results/data/glue_mnli/source.json").read_text()
    assert '"resolved_commit"' in provenance
    assert (workdir / "results/hub/bert_base_mnli/RESOLVED_REVISION").read_text().strip() == \
        "yoshitomo-matsubara/bert-base-uncased-mnli@38c02ebe3cf589c8aa25dfb852aba7b904c29739"
    for figure in ("accuracy_vs_flops", "delta_accuracy_vs_flops", "delta_top1_vs_flops", "miou_vs_flops",
                   "cnn_accuracy_vs_flops", "method_comparison", "speedup_vs_flops",
                   "segmentation_qualitative_mask2former_swin_tiny_cityscapes"):
        assert (workdir / f"results/figures/{figure}.png").stat().st_size > 10_000, figure
    assert (workdir / "results/tables/methods.md").is_file()


def test_keep_slim_none_empties_every_slim_checkpoint_but_the_segmentation_figures(paper_run):
    slim = paper_run["workdir"] / "results/slim"
    dirs = [d for d in slim.glob("*/*/*/*/budget*") if d.is_dir()]
    kept = [d for d in dirs if not (d / "NOT_KEPT.txt").is_file()]
    assert len(dirs) == 35 and [d.relative_to(slim).parts[0] for d in kept] == ["mask2former_swin_tiny_cityscapes"]
    # what is left: the note (and snakemake's timestamp of a directory output)
    assert all([p.name for p in d.iterdir() if not p.name.startswith(".")] == ["NOT_KEPT.txt"] for d in dirs if d not in kept)


def test_the_report_builds_from_the_paper_run(paper_run, stand_ins):
    root, overlay = stand_ins
    result = run_snakemake(paper_run["workdir"], overlay, "--report", "results/report.html",
                           env={"HF_HOME": str(root / "hf"), "OPTIN_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (paper_run["workdir"] / "results/report.html").stat().st_size > 100_000


# -- bad inputs: the data rules stop before any compute, naming the key and the fix --------------------
def first_failure(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    return result.stdout + result.stderr


def with_overlay(stand_ins, tmp_path: Path, change) -> Path:
    root, overlay = stand_ins
    config = yaml.safe_load(overlay.read_text())
    change(config)
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_hub_id_missing_from_the_cache_names_the_model_and_the_prefetch(stand_ins, tmp_path):
    root, overlay = stand_ins
    cache = tmp_path / "hf"
    shutil.copytree(root / "hf", cache, symlinks=True)
    shutil.rmtree(cache / "hub" / "models--facebook--deit-tiny-patch16-224")
    result = run_snakemake(tmp_path / "work", overlay, "--cores", "1", "results/hub/deit_tiny",
                           env={"HF_HOME": str(cache), "OPTIN_OFFLINE": "1"})
    out = first_failure(result)
    assert "models.deit_tiny.source.id: model facebook/deit-tiny-patch16-224@main is not in the Hugging Face cache" in out
    assert "make prefetch" in out


def test_a_cityscapes_tree_without_gtfine_names_the_missing_directory(stand_ins, tmp_path):
    root, _ = stand_ins
    tree = tmp_path / "cityscapes"
    shutil.copytree(root / "cityscapes" / "leftImg8bit", tree / "leftImg8bit")
    overlay = with_overlay(stand_ins, tmp_path, lambda c: c["datasets"]["cityscapes"]["source"].update(root=str(tree)))
    result = run_snakemake(tmp_path / "work", overlay, "--cores", "1", "results/data/cityscapes/split.json",
                           env={"OPTIN_OFFLINE": "1"})
    assert f"datasets.cityscapes.source.root: {tree / 'gtFine' / 'train'} is missing" in first_failure(result)


def test_an_imagenet_tree_with_the_wrong_number_of_classes_names_the_model(stand_ins, tmp_path):
    root, _ = stand_ins
    tree = tmp_path / "imagenet"
    for part in ("train", "val"):
        shutil.copytree(root / "imagenet" / part, tree / part)
        shutil.rmtree(tree / part / "n00000999")
    overlay = with_overlay(stand_ins, tmp_path, lambda c: c["datasets"]["imagenet"]["source"].update(
        train=str(tree / "train"), test=str(tree / "val")))
    result = run_snakemake(tmp_path / "work", overlay, "--cores", "1", "results/data/imagenet/split.json",
                           env={"OPTIN_OFFLINE": "1"})
    assert "999 class folders, but models.deit_base.num_labels is 1000" in first_failure(result)


def test_a_weight_file_with_the_wrong_sha256_is_refused_and_not_kept(stand_ins, tmp_path):
    overlay = with_overlay(stand_ins, tmp_path, lambda c: c["models"]["vgg16_bn_cifar10"]["source"].update(sha256="deadbeef"))
    result = run_snakemake(tmp_path / "work", overlay, "--cores", "1", "results/downloads/weights/vgg16_bn_cifar10.pt",
                           env={"OPTIN_OFFLINE": "1"})
    assert re.search(r"models\.vgg16_bn_cifar10\.source\.sha256: \S+ has sha256 [0-9a-f]{64}, which does not start with "
                     r"the configured deadbeef", first_failure(result))
    assert not list((tmp_path / "work" / "results/downloads/weights").glob("*"))
