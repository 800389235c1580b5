"""Text classifiers: packaged, hub and config-built BERT encoders, fine-tuning and accuracy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from optin.data.text import tokenize
from optin.models import PACKAGED_MODELS


def packaged_model_dir(package: str) -> Path:
    if package not in PACKAGED_MODELS:
        raise KeyError(f"unknown packaged model {package!r}; known: {sorted(PACKAGED_MODELS)}")
    module, sub = PACKAGED_MODELS[package]
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(f"packaged model {package!r} is not installed (pip install {package})")
    return Path(spec.submodule_search_locations[0]) / sub


def download_hub_model(repo_id: str, revision: str, destination: Path) -> Path:
    """Snapshot of ``repo_id`` at ``revision``; the commit it resolved to is written to
    ``RESOLVED_REVISION`` so that results stay traceable when the config names a branch."""
    from huggingface_hub import HfApi, snapshot_download

    path = Path(snapshot_download(repo_id=repo_id, revision=revision, local_dir=destination))
    commit = HfApi().model_info(repo_id, revision=revision).sha
    (path / "RESOLVED_REVISION").write_text(f"{repo_id}@{commit}\n")
    return path


def load_base(source: dict, num_labels: int, input_dir: Path | None, seed: int):
    """(model, tokenizer) for a model source: packaged, hub (already downloaded) or config."""
    torch.manual_seed(seed)  # a new classification head is initialised from the global RNG
    kind = source["kind"]
    if kind == "packaged":
        path = packaged_model_dir(source["package"])
    elif kind == "hub":
        path = input_dir
    elif kind == "config":
        config = BertConfig(num_labels=num_labels, **source["bert_config"])
        tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir(source["tokenizer_package"]))
        return BertForSequenceClassification(config).eval(), tokenizer
    else:
        raise ValueError(f"model source kind must be packaged, hub or config, got {kind!r}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    return model.eval(), tokenizer


def finetune(model, tokenizer, texts, labels, *, epochs: float, lr: float, batch_size: int,
             max_length: int, seed: int, log=print):
    """Plain AdamW fine-tuning with a linear decay; deterministic for a seed on one machine."""
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(texts)
    steps = max(1, int(round(epochs * n / batch_size)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    order = np.concatenate([generator.permutation(n) for _ in range(int(np.ceil(epochs)) + 1)])
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        batch = tokenize(tokenizer, [texts[i] for i in idx], max_length)
        loss = model(**batch, labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 20 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps} loss {loss.item():.4f}")
    return model.eval()


@torch.no_grad()
def predict(model, tokenizer, texts, max_length: int, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, list(texts[start : start + batch_size]), max_length)
        out.append(model(**batch).logits.argmax(-1).numpy())
    return np.concatenate(out)


def accuracy(model, tokenizer, texts, labels, max_length: int) -> float:
    return float((predict(model, tokenizer, list(texts), max_length) == np.asarray(labels)).mean())


def mean_token_length(tokenizer, texts, max_length: int) -> float:
    """Average tokenized length: the sequence length s of the MAC model (optin-method.md §6)."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    return float(np.mean(lengths))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
