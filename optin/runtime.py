"""Job set-up shared by the rule scripts: offline hubs, thread count, output to the job log."""

from __future__ import annotations

import os
import sys


def start_job(log_path: str | None, threads: int, offline: bool = True, light: bool = False) -> None:
    """``light``: the job never touches torch (mask search, tables, figures), so importing it, 2-3 s
    per job on a small CPU, is skipped."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if log_path:
        handle = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr = handle
    if light:
        return
    import torch
    import transformers

    torch.set_num_threads(max(1, int(threads)))
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
