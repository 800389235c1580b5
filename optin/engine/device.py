"""Device-level numerics the engine sets for a block of work (and the workflow's jobs through
optin.workflow.runtime.autocast)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def tf32_matmuls(enabled: bool):
    """TensorFloat-32 for CUDA matmuls and convolutions inside the block (restored after)."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
