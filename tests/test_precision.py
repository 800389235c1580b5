"""Device selection and the precision of the masked-forward engine (config keys device,
scoring.precision). What each precision changes in the kept units of real models is measured by
optin-precision (docs/cluster-gpu.md, "Scoring precision"); bfloat16 changes 1-5 % of them, so float32 stays
the default."""

import pandas as pd
import pytest
import torch

from optin.engine.settings import OptinMethod
from optin.workflow.runtime import autocast, select_device
from optin.engine.scoring import run_teacher, score_layer


def scores(adapter, batch, precision):
    method = OptinMethod.from_config({"semantics": "paper"})
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    with autocast(torch.device("cpu"), precision):
        return pd.concat([score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=4)
                          for layer in range(adapter.num_layers) for kind in ("head", "neuron")], ignore_index=True)


def test_float32_is_the_plain_engine_and_bfloat16_is_close_but_not_identical(adapter, batch):
    plain = scores(adapter, batch, "float32")
    method = OptinMethod.from_config({"semantics": "paper"})
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    direct = pd.concat([score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=4)
                        for layer in range(adapter.num_layers) for kind in ("head", "neuron")], ignore_index=True)
    pd.testing.assert_frame_equal(plain, direct)
    half = scores(adapter, batch, "bfloat16")
    pd.testing.assert_frame_equal(plain[["layer", "kind", "index"]], half[["layer", "kind", "index"]])
    assert not plain["md"].equals(half["md"])  # autocast really ran the forwards in bfloat16
    def rank(column):
        return pd.Series(plain[column].to_numpy()).corr(pd.Series(half[column].to_numpy()), method="spearman")

    # The trajectory (MD) survives bfloat16 roughly (0.86 here); the logit KL, a small difference of
    # nearly equal logits, does not (0.32 here): why float32 is the default.
    assert rank("md") > 0.8
    assert rank("kl") < 0.99


def test_unknown_precision_and_device_are_named():
    with pytest.raises(ValueError, match="float8"):
        autocast(torch.device("cpu"), "float8")
    with pytest.raises(ValueError, match="tpu"):
        select_device("tpu")


def test_cpu_and_auto_without_gpu_stay_on_the_cpu_and_cuda_without_gpu_fails_early(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("cpu") == select_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        select_device("cuda")


def test_chunk_for_memory_fills_the_budget_linearly():
    from optin.engine.scoring import chunk_for_memory

    gib = 2**30
    # 2 GiB fixed + 0.5 GiB per copy in a 64 GiB budget: (64 - 2) / 0.5 = 124 copies
    assert chunk_for_memory(2 * gib, gib / 2, 64 * gib) == 124
    assert chunk_for_memory(2 * gib, gib / 2, 32 * gib) == 60  # half the memory, half the copies (minus fixed)
    assert chunk_for_memory(2 * gib, gib / 2, 1 * gib) == 1    # never below one copy
    assert chunk_for_memory(0, 1, 10**12, limit=300) == 300


def test_auto_chunk_on_the_cpu_is_fixed_without_measuring():
    from optin.engine.scoring import CPU_AUTO_CHUNK, auto_chunk

    calls = []
    assert auto_chunk(lambda copies, units: calls.append(copies), torch.device("cpu"), n_units=4) == CPU_AUTO_CHUNK
    assert not calls  # nothing measured on the CPU


def test_gpu_budget_is_the_jobs_share_of_the_card_and_never_more_than_is_free(monkeypatch):
    from optin.engine import scoring

    gib = 2**30
    state = {"free": 140 * gib, "total": 140 * gib, "allocated": 2 * gib, "reserved": 6 * gib}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (state["free"], state["total"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    device = torch.device("cuda", 0)
    # alone: 80 % of the card less the 2 GiB this job already uses (its 4 GiB cache is its own)
    assert scoring.gpu_memory_budget(device, 1) == pytest.approx(0.8 * (140 - 2) * gib)
    # four jobs to a card: each sizes its chunks to its quarter, whatever is free when it starts
    assert scoring.gpu_memory_budget(device, 4) == pytest.approx(0.8 * (35 - 2) * gib)
    # another process holds most of the card: what is free (+ this job's cache) bounds it
    state["free"] = 10 * gib
    assert scoring.gpu_memory_budget(device, 1) == pytest.approx(0.8 * (10 + 4) * gib)


def test_tf32_rounding_keeps_ten_mantissa_bits_and_rounds_ties_away_from_zero():
    from optin.tools.precision import round_to_tf32

    exact = torch.tensor([1.0, -3.5, 1 + 2**-10, 2**-100, 0.0])  # at most 10 mantissa bits: unchanged
    assert torch.equal(round_to_tf32(exact), exact)
    tie = torch.tensor([1 + 2**-11, -(1 + 2**-11)])  # halfway between 1 and 1 + 2^-10
    assert torch.equal(round_to_tf32(tie), torch.tensor([1 + 2**-10, -(1 + 2**-10)]))
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    assert ((round_to_tf32(x) - x).abs() / x.abs()).max() <= 2**-11


def test_tf32_emulation_rounds_the_inputs_of_every_matmul():
    from optin.tools.precision import round_to_tf32, tf32_emulation
    from optin.engine.device import tf32_matmuls

    g = torch.Generator().manual_seed(0)
    a, b, w = torch.randn(8, 16, generator=g), torch.randn(16, 4, generator=g), torch.randn(4, 16, generator=g)
    expected = round_to_tf32(a) @ round_to_tf32(b)
    linear = torch.nn.functional.linear(round_to_tf32(a), round_to_tf32(w))
    with tf32_matmuls(True), tf32_emulation():
        assert torch.equal(a @ b, expected) and torch.equal(torch.matmul(a, b), expected)
        assert torch.equal(torch.nn.functional.linear(a, w), linear)
        assert torch.equal(torch.einsum("ij,jk->ik", a, b), expected)
        with tf32_matmuls(False):  # where the GPU's TF32 is off (the losses), full float32
            assert not torch.equal(a @ b, expected)
    assert not torch.equal(a @ b, expected)  # and only inside the block


def test_losses_run_in_float32_inside_the_forwards_autocast_and_tf32():
    from optin.tools.precision import scoring_precision
    from optin.engine.scoring import _full_precision

    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with autocast(torch.device("cpu"), "bfloat16"):
        assert (a @ b).dtype == torch.bfloat16
        with _full_precision(torch.device("cpu")):
            assert (a @ b).dtype == torch.float32
    with scoring_precision(torch.device("cpu"), "tf32"):
        assert torch.backends.cuda.matmul.allow_tf32
        with _full_precision(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert torch.equal(a @ b, torch.mm(a, b))
    assert not torch.backends.cuda.matmul.allow_tf32
