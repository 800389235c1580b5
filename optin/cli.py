"""``optin prune``: optin.prune on a saved checkpoint, from the shell.

    optin prune --family bert --checkpoint results/models/minilm_rt/checkpoint \\
        --calibration results/calibration/minilm_rt/rt_polarity/calib4-seed0/teacher.pt --budget 0.5 --out minilm-slim

The checkpoint loads the way the workflow's jobs load it (optin.models.load_checkpoint); the
calibration file is a ``torch.save``d batch of model inputs (a dict of tensors), a list of such
batches, or a workflow calibration file (its batches). Writes the slim model (with the checkpoint's
tokenizer, where it has one) and ``optin_prune.json``: kept units, MACs and the search's record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def calibration_batches(path: Path) -> list[dict]:
    import torch

    data = torch.load(path, weights_only=False, map_location="cpu")
    if isinstance(data, dict) and "teachers" in data:   # a workflow calibration file: per draw, both MD-row variants
        return [draw[True]["batch"] for draw in data["teachers"]]
    batches = data if isinstance(data, list) else [data]
    if not all(isinstance(b, dict) and all(isinstance(v, torch.Tensor) for v in b.values()) for b in batches):
        raise SystemExit(f"{path}: expected a dict of input tensors, a list of them, or a workflow teacher.pt")
    return batches


def prune_command(args: argparse.Namespace) -> Path:
    from optin.arch.registry import FAMILIES
    from optin.models import load_checkpoint
    from optin.pruning import prune

    if args.family not in FAMILIES:
        raise SystemExit(f"--family {args.family!r}: not a registered family; known: {sorted(FAMILIES)}")
    for name in ("checkpoint", "calibration"):
        if not Path(getattr(args, name)).exists():
            raise SystemExit(f"--{name} {getattr(args, name)}: no such file or directory")
    method = json.loads(args.method) if args.method.lstrip().startswith("{") else args.method
    model = load_checkpoint(args.family, args.checkpoint)
    batches = calibration_batches(Path(args.calibration))
    pruned = prune(model, batches if len(batches) > 1 else batches[0], budget=args.budget, method=method,
                   family=args.family, seed=args.seed, mac_seq_len=args.mac_seq_len)
    tokenizer = None
    if (Path(args.checkpoint) / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    out = pruned.save(args.out, tokenizer)
    (out / "optin_prune.json").write_text(json.dumps({**pruned.search, "family": pruned.family}, indent=1) + "\n")
    print(f"kept {pruned.macs['ratio']:.4f} of {pruned.macs['dense']:.4g} MACs; slim model in {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="optin", description="One-shot structured pruning (OPTIN).")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("prune", help="prune a saved checkpoint to a budget and save the slim model")
    sub.add_argument("--family", required=True, help="registered family: bert, vit, mask2former_swin, cifar_resnet, vgg, llama")
    sub.add_argument("--checkpoint", required=True, help="a checkpoint directory (or a CNN's saved directory)")
    sub.add_argument("--calibration", required=True, help="a torch.save'd batch of inputs, or a workflow teacher.pt")
    sub.add_argument("--budget", required=True, type=float, help="fraction of the dense MACs to keep, in (0, 1]")
    sub.add_argument("--out", required=True, help="directory for the slim model")
    sub.add_argument("--method", default="optin", help="'optin' or a JSON object of OPTIN settings")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--mac-seq-len", type=float, default=None, help="tokens per sample the MAC model prices (encoders)")
    args = parser.parse_args(argv)
    prune_command(args)


if __name__ == "__main__":
    main(sys.argv[1:])
