"""Job set-up shared by the rule scripts: offline hubs, thread count, output to the job log."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from optin.data.network import forbid_network, network_forbidden


def start_job(log_path: str | None, threads: int, offline: bool = True, light: bool = False,
              family: str | None = None) -> None:
    """``light``: the job never touches torch (mask search, tables, figures), so importing it, 2-3 s
    per job on a small CPU, is skipped. ``family``: a job of one model family hides the packages
    that family never uses (optin.arch.registry ``unused_packages``)."""
    if family:
        from optin.arch.registry import family as family_entry

        hide_packages(family_entry(family).unused_packages)
    if network_forbidden():
        forbid_network()
        offline = True  # the hub libraries then read their caches instead of trying the network
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Set through the environment, not transformers' API: a CNN job then never imports transformers.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if log_path:
        handle = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = handle
    if light:
        return
    import torch

    torch.set_num_threads(max(1, int(threads)))


def hide_packages(names) -> None:
    """Make ``names`` look uninstalled to this process, so that libraries importing them only when
    installed skip them: with ``sys.modules[name] = None``, ``import name`` raises
    ModuleNotFoundError and ``importlib.util.find_spec(name)`` returns None."""
    for name in names:
        if sys.modules.get(name) is not None:
            raise RuntimeError(f"cannot hide {name}: this process has already imported it")
        sys.modules[name] = None


def seconds_since_process_start() -> float | None:
    """Wall time since this process was created (Linux /proc), None where that is not readable."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / ticks
        return float(open("/proc/uptime").read().split()[0]) - start
    except (OSError, ValueError, IndexError):
        return None


def report_start_up(what: str) -> None:
    """One log line: how long the job took to reach its first useful work (interpreter, Snakemake's
    script preamble, imports, loading), the per-job overhead every shard pays."""
    elapsed = seconds_since_process_start()
    if elapsed is not None:
        print(f"start-up: {what} {elapsed:.1f} s after the process started")


DEVICES = ("cpu", "cuda", "auto")


def select_device(requested: str = "cpu"):
    """The torch device of a GPU-capable job (config key ``device``).

    ``cuda`` without a visible GPU is an error before any work (a scheduler that dropped the GPU
    request); ``auto`` falls back to the CPU. The process-wide default device stays the CPU: the
    library puts every tensor it builds next to the weights or activations it meets
    (tests/test_devices.py), so a forgotten ``device=`` fails loudly instead of being hidden.
    """
    import torch

    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("config device: cuda, but this job sees no CUDA GPU (torch.cuda.is_available() is False); "
                           "run it on a GPU node (the cluster profiles request one) or set device: cpu")
    device = torch.device("cuda", torch.cuda.current_device())
    # TF32 matmuls/convolutions round like bfloat16 inputs, which reorders scores (docs/cluster-gpu.md, "Full
    # reproduction"): float32 means float32 unless scoring.precision asks otherwise.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return device


PRECISIONS = ("float32", "tf32", "bfloat16", "float16")


def autocast(device, precision: str):
    """The masked forwards' precision (config key ``scoring.precision``): ``float32`` (off), ``tf32``
    (CUDA matmuls with TF32 inputs and float32 accumulation; a CPU has none and runs float32), or
    autocast to ``bfloat16`` / ``float16``. The losses always run in float32 (optin.engine.scoring)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"scoring.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "tf32":
        from optin.engine.device import tf32_matmuls

        return tf32_matmuls(True) if device.type == "cuda" else contextlib.nullcontext()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def write_json(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
