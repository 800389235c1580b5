"""The tiny pipeline, run for real: every arm on tiny models and data, twice (byte identity), the
second run killed mid-scoring and resumed. Its own file so that `make test`'s second worker runs
the rest of the suite beside it (pytest-xdist --dist loadfile)."""

import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_workflow import ROOT, SNAKEMAKE, job_blocks, job_counts, reproducible_files, snakemake, synthetic_sentences, tiny_config


def json_mask(run: Path, method: str, seed: int, suffix: str = ".json") -> dict:
    import json

    return json.loads((run / f"results/masks/tinybert/synthetic/{method}/calib4-seed{seed}/budget0.500{suffix}").read_text())


def json_kept(run: Path, method: str, seed: int) -> dict:
    return json_mask(run, method, seed)["kept"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    data = base / "sentences.csv"
    synthetic_sentences(data)
    config = tiny_config(data)
    first, second = base / "first", base / "second"
    result = snakemake(first, config, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The second run, for byte identity, builds only what must not change between runs: every
    # arm's calibration, scores and masks, and the figures drawn from them (evaluations hold latencies).
    # It is killed (kill -9, snakemake and its jobs) once scoring is under way and finished by
    # workflow/resume.py, so the identity also covers an interrupted-and-resumed run.
    targets = [str(p.relative_to(first)) for p in sorted((first / "results").glob("**/*"))
               if p.is_file() and (p.relative_to(first / "results").parts[0] in ("calibration", "scores", "masks")
                                      or "units" in p.parts)]
    second.mkdir()
    (second / "config.yaml").write_text(yaml.safe_dump(config))
    command = [*SNAKEMAKE, "--cores", "2", *targets]
    with open(base / "interrupted.log", "w") as log:
        run = subprocess.Popen(command, cwd=second, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 3600
        while not re.search(r"Finished jobid: \d+ \(Rule: score_shard\)", (base / "interrupted.log").read_text()):
            assert run.poll() is None, "the run ended before scoring: " + (base / "interrupted.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    interrupted = (base / "interrupted.log").read_text()
    finished = finished_outputs(interrupted)
    assert finished, interrupted[-3000:]
    mtimes = {p: (second / p).stat().st_mtime_ns for p in finished}
    resumed = subprocess.run([sys.executable, str(ROOT / "workflow" / "resume.py"), *command], cwd=second,
                             capture_output=True, text=True, timeout=3600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return config, [first, second], {"finished": mtimes, "interrupted": interrupted, "resumed": resumed.stdout + resumed.stderr}


def job_outputs(log: str) -> dict[str, set[str]]:
    """Output paths of each job snakemake started, by job id, from its log."""
    jobs = {}
    for block in job_blocks(log):
        output, jobid = re.search(r"^\s+output: (.*)$", block, re.M), re.search(r"^\s+jobid: (\d+)$", block, re.M)
        if output and jobid:
            jobs[jobid[1]] = set(output[1].split(", "))
    return jobs


def finished_outputs(log: str) -> set[str]:
    outputs = job_outputs(log)
    return {path for jobid in re.findall(r"Finished jobid: (\d+)", log) for path in outputs.get(jobid, ())}


@pytest.mark.workflow
def test_tiny_pipeline_produces_table_figures_and_slim_models(tiny_runs):
    config, (run, _), _ = tiny_runs
    metrics = pd.read_csv(run / "results/tables/metrics.csv")
    assert set(metrics["method"]) == {"optin", "optin_reference", "optin_tau", "optin_md_mean", "magnitude", "kwon", "kwon_tuned",
                                      "random"}
    wide = metrics.pivot_table(index=["experiment", "method", "seed", "budget"], columns="metric", values="value")
    assert len(wide) == 6 * 2 * 2 + 2 * 2 + 2 + (3 + 2) * 2  # text: 6 methods x 2 seeds
    assert (wide["relative_macs"] <= wide.index.get_level_values("budget") + 1e-9).all()
    assert (wide["slim_vs_masked_max_abs"] <= 1e-4).all()
    assert (wide["params"] <= wide["dense_params"]).all()
    assert wide.loc["tinybert/synthetic", "unpruned_accuracy"].iloc[0] > 0.8  # the synthetic task is learnable
    # the text experiment runs on sentence pairs (two BERT segments) end to end, scored by accuracy
    assert "text_pair" in pd.read_csv(run / "results/data/synthetic/sentences.csv").columns
    provenance = json.loads((run / "results/data/synthetic/source.json").read_text())
    assert provenance["sentences_sha256"] == hashlib.sha256((run / "results/data/synthetic/sentences.csv").read_bytes()).hexdigest()
    assert set(metrics[metrics["experiment"] == "tinybert/synthetic"]["task_metric"]) == {"accuracy"}
    assert metrics["device"].str.startswith("cpu:").all()
    tau = wide.loc["tinyvit/fmnist"].loc["optin_tau"]
    assert (tau["tokens_merged"] > 0).all()  # OPTIN-tau really runs on fewer tokens
    assert (wide.loc["tinyvit/fmnist"].loc["optin"]["tokens_merged"] == 0).all()
    segmentation = wide.loc["tinyseg/canvases"].loc["optin"]
    assert ((segmentation["miou"] >= 0) & (segmentation["miou"] <= 1)).all()
    assert (segmentation["whole_network_relative_macs"] > segmentation["relative_macs"]).all()  # decoders are fixed cost
    for experiment, methods in (("tinyresnet/fmnist28", {"optin", "optin_md_mean", "magnitude"}),
                                ("ccexam/mnist", {"optin", "magnitude"})):
        cnn = wide.loc[experiment]
        assert (cnn["channels_kept"] < cnn["dense_channels"]).all()
        assert set(cnn.index.get_level_values("method")) == methods
    assert wide.loc["ccexam/mnist", "unpruned_accuracy"].iloc[0] > 0.95  # the packaged pretrained MNIST CNN
    text = wide.loc["tinybert/synthetic"]
    assert set(text.index.get_level_values("seed")) == {0, 1}
    random_kept = [json_kept(run, "random", seed) for seed in (0, 1)]
    assert random_kept[0] != random_kept[1]  # each seed draws its own random scores
    table = pd.read_csv(run / "results/tables/methods.csv")
    assert set(table[table["experiment"] == "tinybert/synthetic"]["method"]) == {"optin", "optin_reference", "kwon", "kwon_tuned",
                                                                                 "magnitude", "random"}
    assert (table[table["experiment"] == "tinybert/synthetic"]["seeds"] == 2).all()
    assert "| kwon |" in (run / "results/tables/methods.md").read_text()
    cost = pd.read_csv(run / "results/tables/scoring_cost.csv").set_index(["experiment", "method", "seed"])
    assert cost.loc[("tinybert/synthetic", "kwon", 0), "backward_passes"] == config["calibration"]["n"]
    assert cost.loc[("tinybert/synthetic", "optin", 0), "forward_passes"] == 2 * 4 + 2 * 64  # one per head / neuron
    assert cost.loc[("tinybert/synthetic", "random", 0), "forward_passes"] == 0
    assert cost.loc[("tinybert/synthetic", "kwon_tuned", 0), "backward_passes"] == 4 + 4 * 2  # + rearrangement per budget
    tuned = json_mask(run, "kwon_tuned", 0, ".tuned.json")
    assert len(tuned["unit_scales"]["neuron"]) == 2 and tuned["kwon_stages"] == {"rearrange": True, "tune": True}
    plain = json_mask(run, "kwon", 0)
    # Rearrangement moves units inside a layer only: the same counts, so the same MACs.
    assert [len(h) for h in tuned["kept"]["neuron"]] == [len(h) for h in plain["kept"]["neuron"]]
    assert (cost["scoring_wall_s"] > 0).all()
    for name in ("accuracy_vs_flops", "speedup_vs_flops", "miou_vs_flops", "segmentation_qualitative_tinyseg",
                 "cnn_accuracy_vs_flops", "method_comparison", "scoring_cost", "delta_accuracy_vs_flops",
                 "delta_top1_vs_flops", "units/tinybert/synthetic/kept_units", "units/tinyvit/fmnist/importance",
                 "units/ccexam/mnist/kept_units", "units/tinyseg/canvases/kept_units"):
        for ext in ("png", "pdf"):
            assert (run / f"results/figures/{name}.{ext}").stat().st_size > 0
    assert (run / "results/calibration/tinybert/synthetic/calib4-seed0/indices.json").exists()


@pytest.mark.workflow
def test_report_is_one_self_contained_html(tiny_runs, tmp_path):
    config, (run, _), _ = tiny_runs
    result = snakemake(run, config, "--report", str(tmp_path / "report.html"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000


@pytest.mark.workflow
def test_two_clean_runs_give_identical_scores_masks_and_calibration(tiny_runs):
    # Evaluations and the speed-up figure hold measured latencies, which no rerun reproduces.
    _, (first, second), _ = tiny_runs
    files = reproducible_files(first)
    # text, 2 seeds: 2 OPTIN methods x (2 shards + merged), and kwon, magnitude, random scores;
    # vision: OPTIN-beta and -tau share (3 shards + merged); segmentation: 8 Swin blocks + merged;
    # CNNs: 3 shards + merged per OPTIN method, and magnitude scores
    assert sum("scores" in str(p) for p in files) == 2 * (2 * 3 + 3) + 4 + 9 + (2 * 4 + 1) + (4 + 1)
    assert sum("masks" in str(p) for p in files) == 6 * 2 * 2 + 2 * 2 + 2 * 2 + 2 + (3 + 2) * 2  # + kwon_tuned's tuned masks
    # Figures drawn from scores and masks only are byte-identical too.
    figures = sorted(p.relative_to(first) for pattern in ("units/**/*.png", "units/**/*.pdf")
                     for p in (first / "results" / "figures").glob(pattern))
    assert len(figures) == 2 * 2 * 5
    for rel in files + figures:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


@pytest.mark.workflow
def test_a_run_killed_mid_scoring_resumes_without_redoing_a_finished_job(tiny_runs):
    """The second tiny run was killed with SIGKILL once a score shard existed and finished by
    workflow/resume.py (its byte identity with the first run is checked above)."""
    _, (_, second), resume = tiny_runs
    finished = resume["finished"]
    assert any("/shards/" in p for p in finished)  # killed during scoring...
    assert "Finished jobid" in resume["interrupted"] and not re.search(r"\d+ of \d+ steps \(100%\) done", resume["interrupted"])
    redone = {p for paths in job_outputs(resume["resumed"]).values() for p in paths}
    assert redone, resume["resumed"][-3000:]  # ...with jobs left to do
    assert not redone & set(finished)
    assert {p: (second / p).stat().st_mtime_ns for p in finished} == finished
    assert not (second / ".snakemake" / "locks").exists() or not any((second / ".snakemake" / "locks").iterdir())


@pytest.mark.workflow
def test_rerun_does_nothing_and_a_new_budget_reruns_only_its_jobs(tiny_runs):
    config, (run, _), _ = tiny_runs
    result = snakemake(run, config, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout, result.stdout[-2000:]
    changed = copy.deepcopy(config)
    changed["run"]["budgets"] = [0.5, 0.7]
    result = snakemake(run, changed, "-n")
    assert job_counts(result.stdout) == {"solve": 12 + 2 + 1 + 5, "evaluate": 12 + 2 + 5, "tune_mask": 2, "evaluate_segmentation": 1,
                                         "collect": 1, "figures": 1, "segmentation_curves": 1, "cnn_curves": 1,
                                         "method_tables": 1, "unit_figures": 5, "all": 1}
    snakemake(run, config, "-n")  # leave the config as the fixture wrote it


def tiny_method_runs() -> list[tuple[str, str, int, str]]:
    """(model, dataset, calibration size, method) of every method of the tiny run that optin.prune
    runs (token schedules run in the workflow only)."""
    from optin.methods.registry import resolved_settings
    from optin.workflow.config import calibration_n, experiment_methods

    config = tiny_config(Path("sentences.csv"))
    return [(config["experiments"][e]["model"], config["experiments"][e]["dataset"], calibration_n(config, e), method)
            for e in config["run"]["experiments"] for method in experiment_methods(config, e)
            if not resolved_settings(config["methods"][method]).get("prune_tokens")]


@pytest.mark.parametrize("model,dataset,n,method", tiny_method_runs())
def test_optin_prune_gives_the_workflows_mask_on_the_same_inputs(tiny_runs, model, dataset, n, method):
    """optin.prune on the prepared checkpoint as its usual loader returns it and on the calibration
    batches the workflow saved: for every method of the tiny run, the same scores and the same kept
    units as the workflow's mask (after the method's per-mask stages, where it has them)."""
    import torch

    import optin
    from optin.methods.registry import has_mask_stages, scoring_settings
    from optin.models import load_checkpoint

    config, (run, _), _ = tiny_runs
    family = config["models"][model]["family"]
    calibration = torch.load(run / f"results/calibration/{model}/{dataset}/calib{n}-seed0/teacher.pt", weights_only=False)
    batches = [draw[True]["batch"] for draw in calibration["teachers"]]
    labels = calibration["labels"][0] if calibration.get("labels") else None
    suffix = ".tuned.json" if has_mask_stages(config["methods"][method]) else ".json"
    mask = json.loads((run / f"results/masks/{model}/{dataset}/{method}/calib{n}-seed0/budget0.500{suffix}").read_text())
    dense = load_checkpoint(family, run / f"results/models/{model}/checkpoint")
    pruned = optin.prune(dense, batches, budget=0.5, method=config["methods"][method], family=family, seed=0,
                         labels=labels, mac_seq_len=mask.get("mac_seq_len"))
    # the configured method whose scores the workflow reuses (rules/common.smk scores_method: the
    # first alike in the order of the config file the run read)
    methods = yaml.safe_load((run / "config.yaml").read_text())["methods"]
    scored = next(m for m, e in methods.items() if scoring_settings(e) == scoring_settings(methods[method]))
    workflow_scores = pd.read_parquet(run / f"results/scores/{model}/{dataset}/{scored}/calib{n}-seed0/scores.parquet")
    workflow_scores = workflow_scores[workflow_scores["kind"] != "token"].sort_values(["kind", "layer", "index"])
    scores = pruned.scores.sort_values(["kind", "layer", "index"])
    assert list(zip(scores["kind"], scores["layer"], scores["index"])) == \
        list(zip(workflow_scores["kind"], workflow_scores["layer"], workflow_scores["index"]))
    expected = workflow_scores["importance"].to_numpy()
    # equal but for float rounding: the workflow's jobs load some families through a cheaper loader
    assert scores["importance"].to_numpy() == pytest.approx(expected, rel=1e-4, abs=1e-6 * abs(expected).max())
    assert pruned.kept.to_json() == mask["kept"]
    assert pruned.macs == {"dense": mask["base_macs"], "kept": mask["achieved_macs"], "ratio": mask["achieved_ratio"]}
    if "unit_scales" in mask:
        flat = lambda scales: [v for layer in scales["head"] + scales["neuron"] for v in layer]  # noqa: E731
        assert flat(pruned.search["unit_scales"]) == pytest.approx(flat(mask["unit_scales"]), rel=1e-4, abs=1e-6)
    assert sum(p.numel() for p in pruned.model.parameters()) < sum(p.numel() for p in dense.parameters())


# The default run's (model/dataset) of a docs example -> the tiny run's of the same family and its
# calibration size; docs/own-model.md's BERT is a text model too.
TINY_OF = {"minilm_rt/rt_polarity": ("tinybert/synthetic", 4), "my_bert/my_reviews": ("tinybert/synthetic", 4),
           "vit_fmnist/fashion_mnist_28": ("tinyvit/fmnist", 3), "mask2former_fmnist/fmnist_canvases": ("tinyseg/canvases", 3),
           "resnet20_fmnist/fashion_mnist_28": ("tinyresnet/fmnist28", 4)}


def test_the_docs_slim_model_examples_load_the_slim_models_of_a_run(tiny_runs, monkeypatch):
    """Every python block of the README and docs/ that opens a classifier's slim model runs as written
    on the tiny run's slim model of the same family (tests/test_docs.py checks the path itself is one
    the default run, or the page's own overlay, writes)."""
    from torch import nn

    from doc_examples import PAGES, code_blocks, results_paths

    _, (run, _), _ = tiny_runs
    blocks = [b for page in PAGES for b in code_blocks(page) if b.language == "python" and "results/slim/" in b.text]
    assert len(blocks) >= 5
    monkeypatch.chdir(run)
    for block in blocks:
        code = block.text
        for path in results_paths(code):
            pair, method, seed, budget = re.fullmatch(
                r"results/slim/([\w.-]+/[\w.-]+)/([\w.-]+)/calib\d+-seed(\d+)/(budget[\d.]+)", path).groups()
            tiny, n = TINY_OF[pair]
            code = code.replace(path, f"results/slim/{tiny}/{method}/calib{n}-seed{seed}/{budget}")
        namespace = {}
        exec(compile(code, block.where, "exec"), namespace)
        assert isinstance(namespace["model"], nn.Module) and sum(p.numel() for p in namespace["model"].parameters()), block.where


def test_the_optin_prune_command_writes_the_workflows_mask_and_a_slim_model_that_reloads(tiny_runs, tmp_path):
    from transformers import AutoModelForSequenceClassification

    config, (run, _), _ = tiny_runs
    mask = json.loads((run / "results/masks/tinybert/synthetic/optin/calib4-seed0/budget0.500.json").read_text())
    command = [str(Path(sys.executable).parent / "optin"), "prune", "--family", "bert",
               "--checkpoint", str(run / "results/models/tinybert/checkpoint"),
               "--calibration", str(run / "results/calibration/tinybert/synthetic/calib4-seed0/teacher.pt"),
               "--budget", "0.5", "--mac-seq-len", str(mask["mac_seq_len"]), "--out", str(tmp_path / "slim"),
               "--method", json.dumps(config["methods"]["optin"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "slim/optin_prune.json").read_text())["kept"] == mask["kept"]
    slim = AutoModelForSequenceClassification.from_pretrained(tmp_path / "slim", trust_remote_code=True)
    workflow_slim = AutoModelForSequenceClassification.from_pretrained(
        run / "results/slim/tinybert/synthetic/optin/calib4-seed0/budget0.500", trust_remote_code=True)
    assert {k: v.shape for k, v in slim.state_dict().items()} == {k: v.shape for k, v in workflow_slim.state_dict().items()}
