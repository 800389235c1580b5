"""Estimated GPU time of the paper run's OPTIN scoring, scaled from one measurement.

    python -m optin.tools.paper_cost [--ms-per-unit 4.6]

The anchor: ``optin-bench --bert-base --calibration-size 128 --device cuda`` (shared/gpu-check) timed
the float32 engine (TF32 off) on an H200 at 4.6 ms per unit on a paper-sized BERT-base, its
calibration batch the bench's 128 fallback sentences (padded to 23 tokens, 1,912 real tokens). A
unit's cost is one masked forward of the layers after it, so each experiment's time per unit is
that measurement times the ratio of its executed MACs per unit to the bench's, at the same achieved
FLOP/s. That holds for workloads at least as large as the anchor's; for the smallest (DeiT-Ti,
ResNet-56) a GPU runs below its sustained rate, so their figures are lower bounds. Estimates, not
measurements: docs/paper-run.md prints this table with its assumptions.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import yaml

from optin.engine.settings import OptinMethod
from optin.methods.registry import METHODS, SHARDED, entry_of

ANCHOR_MS_PER_UNIT = 4.6
ANCHOR = {"examples": 128, "padded_tokens": 23, "real_tokens": 1912}  # optin-bench's fallback batch


@dataclass(frozen=True)
class Encoder:
    layers: int
    hidden: int
    heads: int
    ffn: int

    @property
    def units(self) -> int:
        return self.layers * (self.heads + self.ffn)

    def layer_macs(self, rows: int, examples: int, padded: int) -> float:
        """Linears on the real token rows; attention scores and mixing on the padded batch."""
        return (4 * self.hidden**2 + 2 * self.hidden * self.ffn) * rows + 2 * examples * padded**2 * self.hidden

    def unit_macs(self, rows: int, examples: int, padded: int) -> float:
        """Mean over units of the layers after the unit's own ((L - 1) / 2 of them; a neuron's own
        layer is an exact rank-one update, a head's adds its output projection and FFN)."""
        return self.layer_macs(rows, examples, padded) * (self.layers - 1) / 2


BERT_BASE = Encoder(12, 768, 12, 3072)
VITS = {"deit_tiny": Encoder(12, 192, 3, 768), "deit_small": Encoder(12, 384, 6, 1536),
        "deit_base": BERT_BASE, "vit_base": BERT_BASE, "vit_base_cifar10": BERT_BASE}


def conv_chain_unit_macs(layer_macs: list[float], layer_units: list[int]) -> float:
    """Mean over channels of the MACs of every layer after the channel's own."""
    total = sum(units * sum(layer_macs[i + 1 :]) for i, units in enumerate(layer_units))
    return total / sum(layer_units)


def vgg16_bn_cifar() -> tuple[list[float], list[int]]:
    convs = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    macs, units, cin, size = [], [], 3, 32
    for v in convs:
        if v == "M":
            size //= 2
            continue
        macs.append(size * size * cin * v * 9)
        units.append(v)
        cin = v
    macs += [512 * 512, 512 * 512]
    units += [512, 512]
    return macs, units


def resnet56_cifar() -> tuple[list[float], list[int]]:
    """Per basic block: both 3x3 convs (the inner channels are the units)."""
    macs, units = [], []
    for stage, (width, size) in enumerate(((16, 32), (32, 16), (64, 8))):
        for block in range(9):
            cin = width // 2 if stage and block == 0 else width
            macs.append(size * size * 9 * width * (cin + width))
            units.append(width)
    return macs, units


def estimates(paper: dict, ms_per_unit: float = ANCHOR_MS_PER_UNIT) -> list[dict]:
    anchor = BERT_BASE.unit_macs(ANCHOR["real_tokens"], ANCHOR["examples"], ANCHOR["padded_tokens"])
    rows = []
    for name in paper["run"]["experiments"]:
        exp = paper["experiments"][name]
        model = exp["model"]
        n = exp.get("calibration_n", paper["calibration"]["n"])
        methods = [paper["methods"][m] for m in exp.get("methods", paper["run"]["methods"])]
        # OPTIN variants with the same per-layer (md, kl) shards share one scoring run (the workflow's
        # shards_method): OPTIN-tau differs from OPTIN-beta only in the search
        runs = len({json.dumps(OptinMethod.from_config(m).shard_settings(), sort_keys=True)
                    for m in methods if entry_of(m).sharded})
        if model.startswith("bert"):
            s = exp["mac_seq_len"]
            units, per_unit = BERT_BASE.units, BERT_BASE.unit_macs(int(n * s), n, int(round(s)))
        elif model in VITS:
            units, per_unit = VITS[model].units, VITS[model].unit_macs(n * 197, n, 197)
        elif model.startswith("vgg"):
            macs, counts = vgg16_bn_cifar()
            units, per_unit = sum(counts), conv_chain_unit_macs(macs, counts) * n
        elif model.startswith("resnet56"):
            macs, counts = resnet56_cifar()
            units, per_unit = sum(counts), conv_chain_unit_macs(macs, counts) * n
        else:
            rows.append({"experiment": name, "units": None})  # Mask2Former: see docs/paper-run.md
            continue
        ms = ms_per_unit * per_unit / anchor
        rows.append({"experiment": name, "units": units, "gmacs_per_unit": per_unit / 1e9, "ms_per_unit": ms,
                     "scoring_runs": runs, "minutes": runs * units * ms / 60e3})
    return rows


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[2] / "workflow/configs/paper.yaml"))
    parser.add_argument("--ms-per-unit", type=float, default=ANCHOR_MS_PER_UNIT)
    args = parser.parse_args(argv)
    paper = yaml.safe_load(Path(args.config).read_text())
    print("| experiment | units | GMAC per unit | ms per unit (est.) | OPTIN scoring runs | scoring (est.) |")
    print("|---|---|---|---|---|---|")
    for row in estimates(paper, args.ms_per_unit):
        if row["units"] is None:
            print(f"| {row['experiment']} | | | not scaled (see text) | | |")
            continue
        time = f"{row['minutes']:.0f} min" if row["minutes"] >= 1 else f"{row['minutes'] * 60:.0f} s"
        print(f"| {row['experiment']} | {row['units']:,} | {row['gmacs_per_unit']:.1f} | {row['ms_per_unit']:.2f} | "
              f"{row['scoring_runs']} | {time} |")


if __name__ == "__main__":
    main()


def llm_ms_per_unit(info: dict, windows: int, context: int, ms_per_unit: float = ANCHOR_MS_PER_UNIT) -> float:
    """Estimated GPU milliseconds per OPTIN unit of a decoder LM (model_info of the LLM arm), scaled
    from the anchor by executed MACs per unit (optin.engine.flops.llm_scoring_macs)."""
    from optin.engine.flops import llm_scoring_macs

    units = info["num_layers"] * (info["heads"] + info["intermediate_size"] // info["channel_group"])
    anchor = BERT_BASE.unit_macs(ANCHOR["real_tokens"], ANCHOR["examples"], ANCHOR["padded_tokens"])
    return ms_per_unit * llm_scoring_macs(METHODS[SHARDED].scoring_passes, info, windows, context) / units / anchor
