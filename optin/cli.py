"""``optin prune``: optin.prune on a saved checkpoint, from the shell.

    optin prune --family bert --checkpoint results/models/minilm_rt/checkpoint \\
        --calibration results/calibration/minilm_rt/rt_polarity/calib4-seed0/teacher.pt --budget 0.5 --out minilm-slim

``--method`` names any registered method or variant (``kwon``, ``nvit``, ``flap_full``, ...; ``optin
methods`` lists them) or gives a JSON object of settings with ``kind``. The checkpoint loads the way
the workflow's jobs load it (optin.models.load_checkpoint); the calibration file is a
``torch.save``d batch of model inputs (a dict of tensors), a list of such batches, or a workflow
calibration file (its batches, and the labels of its first draw). ``--labels`` gives a
``torch.save``d tensor of labels for the methods that need the task loss. Writes the slim model (with
the checkpoint's tokenizer, where it has one) and ``optin_prune.json``: kept units, MACs, the
method's settings and the search's record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optin.methods.registry import DEFAULT


def calibration_batches(path: Path) -> tuple[list[dict], object]:
    """(batches, labels of the first batch or None)."""
    import torch

    data = torch.load(path, weights_only=False, map_location="cpu")
    if isinstance(data, dict) and "teachers" in data:   # a workflow calibration file: per draw, both MD-row variants
        labels = data.get("labels")
        return [draw[True]["batch"] for draw in data["teachers"]], labels[0] if labels else None
    batches = data if isinstance(data, list) else [data]
    if not all(isinstance(b, dict) and all(isinstance(v, torch.Tensor) for v in b.values()) for b in batches):
        raise SystemExit(f"{path}: expected a dict of input tensors, a list of them, or a workflow teacher.pt")
    return batches, None


def prune_command(args: argparse.Namespace) -> Path:
    from optin.arch.registry import FAMILIES
    from optin.methods.registry import as_entry
    from optin.models import load_checkpoint
    from optin.pruning import prune

    if args.family not in FAMILIES:
        raise SystemExit(f"--family {args.family!r}: not a registered family; known: {sorted(FAMILIES)}")
    for name in ("checkpoint", "calibration", "labels", "latency_table"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).exists():
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file or directory")
    method = json.loads(args.method) if args.method.lstrip().startswith("{") else args.method
    try:
        as_entry(method)
    except ValueError as err:
        raise SystemExit(f"--method: {err}") from None
    batches, labels = calibration_batches(Path(args.calibration))
    if args.labels is not None:
        import torch

        labels = torch.load(args.labels, weights_only=False, map_location="cpu")
    model = load_checkpoint(args.family, args.checkpoint)
    pruned = prune(model, batches if len(batches) > 1 else batches[0], budget=args.budget, method=method,
                   family=args.family, seed=args.seed, labels=labels, mac_seq_len=args.mac_seq_len,
                   latency_table=args.latency_table)
    tokenizer = None
    if (Path(args.checkpoint) / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    out = pruned.save(args.out, tokenizer)
    (out / "optin_prune.json").write_text(json.dumps({**pruned.search, "family": pruned.family, "method": pruned.method}, indent=1) + "\n")
    print(f"kept {pruned.macs['ratio']:.4f} of {pruned.macs['dense']:.4g} MACs; slim model in {out}")
    return out


def methods_command(args: argparse.Namespace) -> None:
    from optin.methods.registry import METHODS

    for entry in METHODS.values():
        families = ", ".join(entry.families) if entry.families else "every family"
        print(f"{entry.name}: {entry.summary} [{families}; native resolution: {entry.native_resolution}]")
        for name, variant in entry.variants.items():
            print(f"  {name}: {variant.summary} {variant.settings}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=__package__, description="One-shot structured pruning: OPTIN and its peers.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list the registered methods and their variants")
    sub = commands.add_parser("prune", help="prune a saved checkpoint to a budget and save the slim model")
    sub.add_argument("--family", required=True, help="registered family: bert, vit, mask2former_swin, cifar_resnet, vgg, llama")
    sub.add_argument("--checkpoint", required=True, help="a checkpoint directory (or a CNN's saved directory)")
    sub.add_argument("--calibration", required=True, help="a torch.save'd batch of inputs, or a workflow teacher.pt")
    sub.add_argument("--budget", required=True, type=float, help="fraction of the dense MACs to keep, in (0, 1]")
    sub.add_argument("--out", required=True, help="directory for the slim model")
    sub.add_argument("--method", default=DEFAULT, help="a registered method or variant name (optin methods), "
                     "or a JSON object of settings with 'kind'")
    sub.add_argument("--labels", default=None, help="a torch.save'd tensor of the calibration labels (Kwon et al., NViT)")
    sub.add_argument("--latency-table", default=None, help="the model's latency table (budget_metric latency)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--mac-seq-len", type=float, default=None, help="tokens per sample the MAC model prices (encoders)")
    args = parser.parse_args(argv)
    methods_command(args) if args.command == "methods" else prune_command(args)


if __name__ == "__main__":
    main(sys.argv[1:])
