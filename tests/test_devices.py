"""Correctness never rests on the process-wide default device.

On a GPU every tensor a job builds (index tensors, masks, constants, image statistics) must go to
the device of the activations it meets. Without a GPU the same class of bug shows by making
``meta`` the default device while the model and data stay on the CPU: a tensor built without an
explicit device lands on ``meta`` and meeting a CPU tensor raises the "Expected all tensors to be
on the same device" a GPU job raises (the ViT, CNN and segmentation failures of issue 16).
"""

import numpy as np
import pytest
import torch

from families import FAMILIES
from optin.arch import adapter_for
from optin.data import images as image_data
from optin.data.segmentation import canvas_pixels
from optin.methods.kwon import fisher_scores, tune_scales
from optin.engine.settings import OptinMethod
from optin.models import cnn, vision
from optin.engine.scoring import run_teacher, score_layer, score_naive


def some_units(adapter, layer: int, kind: str) -> list[int]:
    if kind == "token":
        return [1, 2, 3]
    counts = adapter.unit_counts(kind)
    return list(range(min(3, counts[layer])))


def scores(adapter, teacher, layer, kind, method, units, naive=False, chunk=2):
    if naive:
        return score_naive(adapter, teacher, layer, kind, method, seed=0, units=units)
    return score_layer(adapter, teacher, layer, kind, method, seed=0, chunk=chunk, units=units)


def masked_and_slim_logits(adapter, batch, kept):
    masked = adapter.masked_logits(batch, kept)
    slim = adapter_for(adapter.slim(kept))
    return masked, slim.forward(batch)[2]


def meta_default():
    """Tensors built without a device inside this block land on ``meta``; build models and data before it."""
    return torch.device("meta")


# Row subsets (40 rows of every tap), so the sampler's indices meet the taps too: one per tap
# (the paper), or a fresh one per unit (the authors' code; taps of one size only).
METHODS = {"paper": {"semantics": "paper", "md_rows": 40}, "reference": {"semantics": "reference", "md_rows": 40}}
CASES = [(f, m) for f in sorted(FAMILIES) for m in METHODS if m == "paper" or f in ("bert", "vit", "vit_timm")]


@pytest.mark.parametrize("family,semantics", CASES)
def test_scoring_and_slimming_never_use_the_default_device(family, semantics):
    case = FAMILIES[family]
    adapter = adapter_for(case.build())
    batch = case.batch()
    method = OptinMethod.from_config(METHODS[semantics])
    with meta_default():
        teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
        for kind in case.kinds:
            units = some_units(adapter, 1, kind)
            fast = scores(adapter, teacher, 1, kind, method, units)
            naive = scores(adapter, teacher, 1, kind, method, units, naive=True)
            np.testing.assert_allclose(fast["md"], naive["md"], rtol=1e-3, atol=1e-9)
            # the authors' float32 KL, summed over the batch, rounds at ~1e-5 whichever path ran it
            np.testing.assert_allclose(fast["kl"], naive["kl"], rtol=1e-3, atol=1e-9 if method.kl_float64 else 2e-5)
        masked, slim = masked_and_slim_logits(adapter, batch, case.kept)
    torch.testing.assert_close(slim, masked, rtol=0, atol=1e-4)
    assert masked.device.type == "cpu"


@pytest.mark.parametrize("family", ["bert", "vit", "vit_timm"])
def test_kwon_fisher_never_uses_the_default_device(family):
    case = FAMILIES[family]
    adapter = adapter_for(case.build())
    batch = case.batch()
    labels = torch.arange(len(next(iter(batch.values())))) % 3
    with meta_default():
        fisher = fisher_scores(adapter, batch, labels)
    assert len(fisher) == sum(adapter.unit_counts("head")) + sum(adapter.unit_counts("neuron"))


def test_kwon_mask_tuning_never_uses_the_default_device():
    case = FAMILIES["bert"]
    adapter = adapter_for(case.build())
    teacher = run_teacher(adapter, case.batch(), include_padding=False)
    with meta_default():
        heads, _ = tune_scales(adapter, teacher, case.kept)
    assert [len(h) for h in heads] == [len(h) for h in case.kept["head"]]


@pytest.mark.parametrize("family", ["vit", "vit_timm"])
def test_token_merging_never_uses_the_default_device(family):
    case = FAMILIES[family]
    adapter = adapter_for(case.build())
    batch = case.batch()
    merges = [0, 3, 2]
    with meta_default():
        masked = adapter.forward_merged(batch, merges, *adapter.kept_masks(case.kept))
        if family == "vit":  # timm models are evaluated through forward_merged itself
            with torch.no_grad():
                torch.testing.assert_close(adapter.slim(case.kept, token_merges=merges)(**batch).logits, masked, rtol=0, atol=1e-4)
    assert masked.device.type == "cpu"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_auto_chunk_probe_scores_only_units_that_exist(family):
    """The probe of ``scoring.chunk: auto`` scored units 0 and 1 of every layer: the first Swin
    stage has one head, so on the GPU it read past the head contributions (the device-side assert
    of Mask2Former layers 0 and 1). On the CPU the same read is an IndexError."""
    from optin.engine.scoring import probe_chunk

    case = FAMILIES[family]
    adapter = adapter_for(case.build())
    teacher = run_teacher(adapter, case.batch(), include_padding=OptinMethod().md_include_padding)
    kind = case.kinds[0]
    counts = adapter.unit_counts(kind)
    layer = counts.index(min(counts))
    probed = []

    def score(copies, units):
        probed.append(list(units))
        return scores(adapter, teacher, layer, kind, OptinMethod(), units, chunk=copies)

    def peak_bytes(run):  # stands in for the GPU's peak-memory counter: 100 + 10 per copy
        return 100.0 + 10.0 * len(run())

    assert probe_chunk(score, counts[layer], peak_bytes, budget_bytes=1000.0) == 90
    assert probed and all(0 <= u < counts[layer] for units in probed for u in units)


def test_image_pipelines_build_their_constants_next_to_the_images():
    grey = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    with meta_default():
        for pixels in (None, {"channels": 1, "mean": [0.286], "std": [0.353]}):
            x = image_data.preprocess(grey, 32, pixels)
            assert x.device.type == "cpu" and x.shape[1] == (3 if pixels is None else 1)
        assert canvas_pixels(grey).device.type == "cpu"


def test_evaluation_helpers_run_on_split_pixels():
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6) % 3
    vit, resnet = FAMILIES["vit"].build(), FAMILIES["cifar_resnet"].build()
    rgb = image_data.ImageSplit(lambda rows: image_data.preprocess(images[np.asarray(rows)], 28), labels)
    grey = image_data.ImageSplit(lambda rows: image_data.preprocess(images[np.asarray(rows)], 13, {"channels": 1, "mean": [0.3], "std": [0.3]}),
                                 labels)
    with meta_default():
        assert vision.predict(vit, rgb, batch_size=4).shape == (6,)
        assert cnn.predict(resnet, grey, batch_size=4).shape == (6,)
