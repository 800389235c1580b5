"""The GPU tier (`pytest -m gpu`, `make test-gpu`): every family's engine and slimming on CUDA, and
the tiny workflow end to end with `device: cuda`. Skipped where no CUDA device is visible.

OPTIN_GPU_TIER_DEVICE=cpu runs the same tests on the CPU, to check the tier itself without a GPU.
"""

import copy
import os

import numpy as np
import pandas as pd
import pytest
import torch

from families import FAMILIES, to_device
from optin.arch import adapter_for
from optin.engine.settings import OptinMethod
from optin.workflow.runtime import select_device
from optin.engine.scoring import auto_chunk, run_teacher
from test_devices import masked_and_slim_logits, scores
from test_workflow import ROOT, snakemake, synthetic_sentences, tiny_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device():
    forced = os.environ.get("OPTIN_GPU_TIER_DEVICE")
    if forced:
        return torch.device(forced)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible (torch.cuda.is_available() is False)")
    return select_device("cuda")  # float32 means float32: TF32 off


def on(case, device):
    adapter = adapter_for(case.build().to(device))
    return adapter, to_device(case.batch(), device)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_scores_equal_the_naive_oracle_on_the_device(family, device):
    case = FAMILIES[family]
    adapter, batch = on(case, device)
    method = OptinMethod(md_rows=40)
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    for layer in range(adapter.num_layers):
        for kind in case.kinds:
            if kind == "token" and layer == 0:
                continue  # layer 0 never loses a token
            if kind == "token":
                units = [1, 2, 3]
            else:
                count = adapter.unit_counts(kind)[layer]
                units = list(range(0, count, max(1, count // 6)))
            fast = scores(adapter, teacher, layer, kind, method, units, chunk=4)
            naive = scores(adapter, teacher, layer, kind, method, units, naive=True)
            assert len(fast) == len(units) and (fast["md"] > 0).any()  # a dead ReLU channel may move nothing
            np.testing.assert_allclose(fast["md"], naive["md"], rtol=1e-3, atol=1e-9)
            np.testing.assert_allclose(fast["kl"], naive["kl"], rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_slim_model_is_the_masked_model_on_the_device(family, device):
    case = FAMILIES[family]
    adapter, batch = on(case, device)
    masked, slim = masked_and_slim_logits(adapter, batch, case.kept)
    assert masked.device.type == slim.device.type == device.type
    torch.testing.assert_close(slim, masked, rtol=0, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_auto_chunk_probes_every_first_layer(family, device):
    """Mask2Former's first Swin stage has one head: the probe that crashed layers 0 and 1 on an H200."""
    case = FAMILIES[family]
    adapter, batch = on(case, device)
    method = OptinMethod()
    teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
    kind = case.kinds[0]
    counts = adapter.unit_counts(kind)
    for layer in (0, 1):
        chunk = auto_chunk(lambda copies, units: scores(adapter, teacher, layer, kind, method, units, chunk=copies),
                           device, counts[layer])
        assert chunk >= 1
        whole = scores(adapter, teacher, layer, kind, method, None, chunk=chunk)
        assert len(whole) == counts[layer]


def test_tiny_workflow_runs_every_arm_on_the_device(device, tmp_path):
    data = tmp_path / "sentences.csv"
    synthetic_sentences(data)
    config = copy.deepcopy(tiny_config(data))
    config["device"] = device.type
    config["scoring"] = {"chunk": "auto"}
    result = snakemake(tmp_path / "run", config, "--cores", "4", "--workflow-profile", str(ROOT / "workflow/profiles/gpu"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "run/results/tables/metrics.csv")
    experiments = {f"{e['model']}/{e['dataset']}" for e in config["experiments"].values()}
    assert set(metrics["experiment"]) == experiments
    if device.type == "cuda":
        assert not metrics["device"].str.startswith("cpu:").any()
