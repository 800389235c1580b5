"""docs/own-model.md, run as written: its YAML blocks with only the paths replaced by files made here
(a save_pretrained BERT directory and a CSV; a CNN state dict and an ImageFolder tree), its Python
snippet against the run's results. Part of the paper tier (make test-paper): a minute or two."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import standins
from test_workflow import SNAKEMAKE

pytestmark = [pytest.mark.paper, pytest.mark.workflow]

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-model.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def doc_config(name: str) -> dict:
    block = next(b for b in doc_blocks("yaml") if b.startswith(f"# {name}\n"))
    return yaml.safe_load(block)


def run_doc_config(workdir: Path, config: dict, paths: dict[str, Path]) -> subprocess.CompletedProcess:
    text = yaml.safe_dump(config)
    for doc_path, real in paths.items():
        assert doc_path in text, f"{doc_path} is no longer in {DOC.name}"
        text = text.replace(doc_path, str(real))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    (workdir / "mine.yaml").write_text(text)
    # The command the doc gives: snakemake --cores all --configfile config.yaml <overlay>
    command = next(b for b in doc_blocks("bash") if "--configfile config.yaml" in b).split()
    assert command[:3] == ["snakemake", "--cores", "all"]
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", "--configfile", "config.yaml", "mine.yaml"],
                          capture_output=True, text=True, timeout=1200, cwd=workdir)


def test_the_text_example_prunes_a_local_bert_on_a_csv(tmp_path):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = doc_config("my_text.yaml")
    checkpoint = tmp_path / "my-bert"
    torch.manual_seed(0)
    bert = BertConfig(vocab_size=30522, num_labels=2, **{**standins.BERT, "num_hidden_layers": config["models"]["my_bert"]["num_layers"]})
    BertForSequenceClassification(bert).save_pretrained(checkpoint)
    for path in standins.minilm_tokenizer_files():
        (checkpoint / path.name).write_bytes(path.read_bytes())
    rng = np.random.default_rng(0)
    rows = config["datasets"]["my_reviews"]["split"]
    n = rows["train"] + rows["test"] + 10
    csv = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [" ".join(rng.choice(standins.WORDS, 8)) for _ in range(n)], "label": rng.integers(0, 2, n)}).to_csv(csv, index=False)

    workdir = tmp_path / "work"
    result = run_doc_config(workdir, config, {"checkpoints/my-bert": checkpoint, "data/my_reviews.csv": csv})
    assert result.returncode == 0, result.stderr[-5000:]
    metrics = pd.read_csv(workdir / "results/tables/metrics.csv")
    assert set(metrics["method"]) == {"optin", "kwon", "magnitude"}
    assert set(metrics["budget"].round(3)) == {0.5, 0.7}
    # the doc's Python snippet, in the run's directory
    snippet = next(b for b in doc_blocks("python") if "from_pretrained" in b)
    subprocess.run([sys.executable, "-c", snippet + "\nassert model.config.num_labels == 2\n"], cwd=workdir, check=True,
                   capture_output=True, text=True, timeout=300)


def test_the_cnn_example_prunes_a_local_state_dict_on_an_imagefolder(tmp_path):
    import torch
    from PIL import Image

    from optin.models.cnn import build_convnet

    config = doc_config("my_cnn.yaml")
    model = config["models"]["my_resnet"]
    torch.manual_seed(0)
    weights = tmp_path / "my_resnet.pt"
    torch.save(build_convnet({**model["source"]["convnet_config"], "num_labels": model["num_labels"]}).state_dict(), weights)
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for part, count in (("train", 4), ("val", 2)):
        for label in range(model["num_labels"]):
            folder = images / part / f"class_{label}"
            folder.mkdir(parents=True)
            for k in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{k}.jpg")

    workdir = tmp_path / "work"
    result = run_doc_config(workdir, config, {"checkpoints/my_resnet.pt": weights, "data/my_images/train": images / "train",
                                              "data/my_images/val": images / "val"})
    assert result.returncode == 0, result.stderr[-5000:]
    metrics = pd.read_csv(workdir / "results/tables/metrics.csv")
    assert set(metrics["method"]) == {"optin", "magnitude"} and set(metrics["budget"].round(3)) == {0.6}
