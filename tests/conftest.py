import functools
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from optin.arch import adapter_for  # noqa: E402

# `make test` runs two xdist workers on two cores: one torch thread each, so that in-process tests
# do not oversubscribe the cores (OpenMP threads spin-waiting against each other and against the
# tiny workflow's jobs). Jobs the tests start set their own thread counts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def tiny_bert(seed: int = 0, layers: int = 3, heads: int = 4, hidden: int = 32, ffn: int = 48, labels: int = 3):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, num_labels=labels, max_position_embeddings=64)
    model = BertForSequenceClassification(config).eval()
    # Untrained BERT has tiny LayerNorm-dominated logits; spread the classifier so KL is not ~0.
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    return model


def padded_batch(seed: int = 0, lengths=(9, 6, 9, 4, 7, 3)):
    """Sentences of different lengths, so that length buckets hold 1 or 2 sentences."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture
def model():
    return tiny_bert()


@pytest.fixture
def adapter(model):
    return adapter_for(model)


@pytest.fixture
def batch():
    return padded_batch()


# Tiers that run only when asked for: real Slurm starts daemons (minutes, root); the paper tier
# runs the paper configuration's whole DAG on stand-ins (about 7 minutes on 2 cores).
OPT_IN_TIERS = {"slurm": "a real single-node Slurm: run with -m slurm (make test-slurm)",
                "paper": "paper.yaml on stand-ins: run with -m paper (make test-paper)"}


# Test modules that start Snakemake (a run or a dry run): `make test-fast` leaves them out (-m "not
# snakemake"), everything else runs in about two minutes.
SNAKEMAKE_CALLS = ("snakemake(", "SNAKEMAKE", "dry_run(", "doc_examples")


@functools.cache
def starts_snakemake(source: str) -> bool:
    return any(call in Path(source).read_text() for call in SNAKEMAKE_CALLS)


@pytest.hookimpl(tryfirst=True)
def pytest_itemcollected(item):
    source = getattr(item.module, "__file__", None) if hasattr(item, "module") else None
    if source and starts_snakemake(source):
        item.add_marker(pytest.mark.snakemake)


def pytest_collection_modifyitems(config, items):
    asked = config.option.markexpr or ""
    for marker, reason in OPT_IN_TIERS.items():
        if marker in asked:
            continue
        for item in items:
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
    group_shared_fixtures(items)


def shared_fixtures(item) -> list[str]:
    """The module- or session-scoped fixtures of this test suite that ``item`` uses."""
    info = getattr(item, "_fixtureinfo", None)
    return [name for name, defs in (info.name2fixturedefs.items() if info else [])
            if defs and defs[-1].scope in ("module", "session") and defs[-1].baseid]


def group_shared_fixtures(items) -> None:
    """`make test` runs `pytest -n 2 --dist loadfile`: a file is a unit of work, handed out in
    collection order. Tests with a module- or session-scoped fixture of this suite (the tiny
    pipeline runs, minutes) come first, so that the longest unit does not start last. (xdist's
    loadgroup would split files finer, but 3.8 cannot mark pytest 9's node ids.)"""
    items.sort(key=lambda item: not shared_fixtures(item))
