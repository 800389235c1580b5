"""Decoder LMs (the llama family): loading a GGUF, hub or local checkpoint, the document corpus as
token windows, calibration, and evaluation (perplexity, zero-shot accuracy, latency).

Token windows: each document's tokens followed by EOS, concatenated in document order and cut into
non-overlapping windows of ``context`` tokens (the last partial window is dropped). Calibration
windows come from the calibration documents only, perplexity windows from the held-out ones.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from optin.arch.llama import channel_group_error, unsupported_reason
from optin.models.gguf import gguf_file, gguf_metadata

# The zero-shot prompt (sentiment of one sentence) and the label words compared at its end. Chosen
# among four prompts by the dense model's accuracy on 200 of the held-out sentences (docs/llm.md): a
# selection on evaluation data, shared by every method.
ZERO_SHOT_PROMPT = 'Movie review: "{text}"\nSentiment:'
ZERO_SHOT_WORDS = (" negative", " positive")   # label 0, label 1
GENERATION_PROMPT = "What is the capital of France?"


def load_source(source: dict, pretrained_dir: str | None = None):
    """(model in float32, tokenizer) of an llm.models.<id>.source."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source["kind"] == "gguf":
        path = gguf_file(source)
        # transformers de-quantizes every GGUF tensor to float32
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        directory = pretrained_dir or source["path"]
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model.eval(), tokenizer


def prepare(job: LlmPreparation):
    """The checkpoint every job of the arm loads (safetensors + tokenizer), its structure and dense metrics."""
    model, tokenizer = load_source(job.source, job.pretrained_dir)
    reason = unsupported_reason(model.config)
    if reason:
        raise ValueError(f"llm.models.{job.name}: {reason}")
    error = channel_group_error(model.config.intermediate_size, job.channel_group)
    if error:
        raise ValueError(f"llm.models.{job.name}.{error}")
    model.config.optin_channel_group = job.channel_group
    # De-quantized GGUF weights are plain float32 tensors: saved as such, not as a quantized model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    config = model.config
    info = {"family": "llama", "model_type": config.model_type, "num_layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size, "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
            "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
            "intermediate_size": config.intermediate_size, "channel_group": job.channel_group, "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings, "tie_word_embeddings": bool(config.tie_word_embeddings),
            "params": sum(p.numel() for p in model.parameters()),
            "weights": "de-quantized GGUF (float32)" if job.source["kind"] == "gguf" else "float32",
            "source": job.source}
    if job.source["kind"] == "gguf":
        info["gguf"] = gguf_metadata(gguf_file(job.source))
    return model, tokenizer, info


@dataclass
class LlmPreparation:
    name: str
    source: dict
    channel_group: int
    pretrained_dir: str | None = None


def save_checkpoint(model, path, tokenizer=None) -> None:
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def load_checkpoint(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# -- token windows -------------------------------------------------------------------------------
def token_stream(tokenizer, texts: list[str]) -> list[int]:
    ids = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids


def windows(tokens: list[int], context: int) -> torch.Tensor:
    count = len(tokens) // context
    return torch.tensor(tokens[: count * context], dtype=torch.long).view(count, context)


def corpus_windows(tokenizer, documents, rows: list[int], context: int) -> torch.Tensor:
    return windows(token_stream(tokenizer, [documents["text"][r] for r in rows]), context)


def calibration(adapter, job: LlmCalibrationJob):
    """Teachers of ``job.draws`` disjoint seeded draws of ``job.n`` calibration windows, and the
    number of windows in the pool they were drawn from."""
    from optin.data import disjoint_draws
    from optin.models import Calibration
    from optin.engine.scoring import run_teacher

    pool = corpus_windows(job.tokenizer, job.documents, job.rows, job.context)
    draws = disjoint_draws(len(pool), job.n, job.seed, job.draws)
    teachers = []
    for positions in draws:
        teacher = run_teacher(adapter, {"input_ids": pool[positions].to(job.device)}).to_dict()
        teachers.append({True: teacher, False: teacher})  # packed windows have no padding
    return Calibration(teachers, [], draws), len(pool)


@dataclass
class LlmCalibrationJob:
    tokenizer: object
    documents: object          # the corpus table (column text)
    rows: list[int]            # its calibration documents
    n: int
    context: int
    seed: int
    draws: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


# -- evaluation ---------------------------------------------------------------------------------
@torch.no_grad()
def perplexity(model, windows_: torch.Tensor, batch_size: int = 4) -> float:
    """exp of the mean next-token NLL over every predicted token of the windows."""
    total, count = 0.0, 0
    for start in range(0, len(windows_), batch_size):
        ids = windows_[start:start + batch_size].to(model.device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"))
        count += ids[:, 1:].numel()
    return float(torch.exp(torch.tensor(total / count)))


def label_word_ids(tokenizer) -> list[int]:
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in ZERO_SHOT_WORDS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"zero-shot label words {ZERO_SHOT_WORDS} must be one token each, got {ids}")
    return [i[0] for i in ids]


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, texts: list[str], labels: list[int], batch_size: int = 16) -> float:
    """Accuracy of argmax over the label words' next-token log-probabilities after ZERO_SHOT_PROMPT."""
    words = label_word_ids(tokenizer)
    correct = 0
    for start in range(0, len(texts), batch_size):
        prompts = [tokenizer(ZERO_SHOT_PROMPT.format(text=t), add_special_tokens=False)["input_ids"]
                   for t in texts[start:start + batch_size]]
        width = max(len(p) for p in prompts)
        # left padding: every prompt ends at the last position
        ids = torch.full((len(prompts), width), tokenizer.eos_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            mask[row, width - len(p):] = 1
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       position_ids=positions.to(model.device)).logits[:, -1, words]
        predicted = logits.argmax(-1).cpu()
        correct += int((predicted == torch.tensor(labels[start:start + batch_size])).sum())
    return correct / len(texts)


@torch.no_grad()
def generate_text(model, tokenizer, prompt: str = GENERATION_PROMPT, new_tokens: int = 12) -> str:
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids.to(model.device), max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def decode_seconds(model, prompt: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` greedy decode steps with the KV cache after prefilling ``prompt``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    token = out.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - start


@torch.no_grad()
def latency(models: dict, prompt: torch.Tensor, decode_steps: int, repeats: int, warmup: int) -> dict:
    """Prefill and decode throughput (tokens/s) of each model, runs interleaved, medians of ``repeats``."""
    from optin.engine import latency as timing

    prefill = timing.compare(models, {"input_ids": prompt}, repeats, warmup)
    decode = {name: [] for name in models}
    for _ in range(max(1, repeats // 2)):
        for name, model in models.items():
            decode[name].append(decode_seconds(model, prompt[:, :16], decode_steps))
    return {name: {"prefill_tokens_per_s": prompt.numel() / prefill[name],
                   "decode_tokens_per_s": decode_steps / statistics.median(decode[name])} for name in models}


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())



@dataclass
class EvaluationData:
    """What an LLM evaluation reads: held-out windows per context and the zero-shot sentences."""

    windows: dict[int, torch.Tensor]
    texts: list[str]
    labels: list[int]

    @classmethod
    def load(cls, tokenizer, documents_csv, split_json, zero_shot_files, evaluation: dict) -> EvaluationData:
        import pandas as pd

        documents = pd.read_csv(documents_csv)
        heldout = read_json(split_json)["heldout"]
        stream = token_stream(tokenizer, [documents["text"][r] for r in heldout])  # tokenized once for every context
        windows_ = {}
        for point in evaluation["perplexity"]:
            available = windows(stream, point["context"])
            if len(available) < point["windows"]:
                raise ValueError(f"llm.evaluation.perplexity: {point['windows']} windows of {point['context']} tokens asked, "
                                 f"the held-out documents give {len(available)}")
            windows_[point["context"]] = available[: point["windows"]]
        sentences_csv = next(p for p in zero_shot_files if str(p).endswith("sentences.csv"))
        split_file = next(p for p in zero_shot_files if str(p).endswith("split.json"))
        sentences = pd.read_csv(sentences_csv)
        rows = balanced_rows(sentences["label"].to_numpy(), read_json(split_file)["test"], evaluation["zero_shot"]["n"])
        return cls(windows_, sentences["text"].iloc[rows].tolist(), sentences["label"].iloc[rows].astype(int).tolist())

    def quality(self, model, tokenizer) -> dict:
        out = {f"perplexity_ctx{context}": perplexity(model, w) for context, w in self.windows.items()}
        out["zero_shot_accuracy"] = zero_shot_accuracy(model, tokenizer, self.texts, self.labels)
        return out


def balanced_rows(labels, test_rows: list[int], n: int, seed: int = 0) -> list[int]:
    """``n`` test rows, half of each label, from a seeded shuffle of the test split (the split is
    sorted by row, and rt_polarity's file by label: its first rows are all positive)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(np.asarray(test_rows))
    picked = [int(r) for label in (0, 1) for r in [r for r in order if labels[r] == label][: n // 2 + (n % 2) * label]]
    if len(picked) < n:
        raise ValueError(f"llm.evaluation.zero_shot.n: {n} sentences asked, the test split has {len(picked)} of balanced labels")
    return picked
