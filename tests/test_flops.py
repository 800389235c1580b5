import pytest

from optin.engine import flops
from optin.arch import Kept, adapter_for
from tests.conftest import tiny_bert


def test_bert_base_mnli_check_values():
    # optin-method.md §6: d = 768, H = 12, D_ff = 3072, L = 12, s = 39.05
    assert flops.head_macs(39.05, 768, 64) == pytest.approx(7_872_730, abs=1)
    assert flops.neuron_macs(39.05, 768) == pytest.approx(59_981, abs=1)
    base = flops.encoder_macs([12] * 12, [3072] * 12, 39.05, 768, 64)
    assert base == pytest.approx(3.345e9, rel=1e-3)


def test_deit_small_check_values():
    # DeiT-S: d = 384, H = 6 (d_h = 64), D_ff = 1536, s = 196, 12 layers
    assert flops.head_macs(196, 384, 64) == pytest.approx(24_184_832, abs=1)
    assert flops.neuron_macs(196, 384) == pytest.approx(150_528, abs=1)
    assert flops.encoder_macs([6] * 12, [1536] * 12, 196, 384, 64) == pytest.approx(4.516e9, rel=1e-3)


def test_direct_count_of_full_model_equals_formula():
    adapter = adapter_for(tiny_bert())
    counted = flops.count_linear_attention_macs(adapter.layer_linear_shapes(), 11.5)
    formula = flops.encoder_macs(adapter.unit_counts("head"), adapter.unit_counts("neuron"), 11.5, 32, 8)
    assert counted == pytest.approx(formula, rel=1e-12)


def test_direct_count_of_slim_model_equals_formula():
    adapter = adapter_for(tiny_bert())
    kept = Kept.of(head=((0, 2), (), (1, 2, 3)), neuron=((), tuple(range(10)), (5, 7)))
    slim = adapter_for(adapter.slim(kept))
    counted = flops.count_linear_attention_macs(slim.layer_linear_shapes(), 20.0)
    heads, neurons = kept.counts("head"), kept.counts("neuron")
    assert counted == pytest.approx(flops.encoder_macs(heads, neurons, 20.0, 32, 8), rel=1e-12)


def test_patch_embedding_macs_use_the_models_own_width():
    """optin-method.md §6: 3·C·14·14·16·16 with C = 192 for DeiT-Ti (the authors' code uses 384)."""
    from types import SimpleNamespace

    from optin.models.vision import patch_embedding_macs

    deit_tiny = SimpleNamespace(config=SimpleNamespace(patch_size=16, hidden_size=192, num_channels=3))
    assert patch_embedding_macs(deit_tiny, 224) == 3 * 192 * 14 * 14 * 16 * 16
