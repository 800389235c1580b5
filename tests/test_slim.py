import pytest
import torch
from transformers import AutoModelForSequenceClassification

from optin.engine import flops
from optin.arch import Kept, adapter_for

KEPT = [
    Kept.of(head=((0, 2), (), (1, 2, 3)), neuron=((), tuple(range(10)), (5, 7))),
    Kept.of(head=((), (), ()), neuron=((3,), (), ())),
    Kept.of(head=((0, 1, 2, 3),) * 3, neuron=(tuple(range(48)),) * 3),
]


def test_slim_model_is_the_masked_model(adapter, batch):
    for kept in KEPT:
        head_masks, neuron_masks = adapter.kept_masks(kept)
        _, _, masked = adapter.forward(batch, head_masks, neuron_masks)
        slim = adapter.slim(kept)
        with torch.no_grad():
            torch.testing.assert_close(slim(**batch).logits, masked, rtol=0, atol=1e-5)
        assert adapter_for(slim).unit_counts("head") == [len(h) for h in kept["head"]]
        assert adapter_for(slim).unit_counts("neuron") == [len(n) for n in kept["neuron"]]


def test_slim_model_has_fewer_parameters(adapter):
    slim = adapter.slim(KEPT[0])
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in adapter.model.parameters())


def test_slim_model_reloads_with_from_pretrained(adapter, batch, tmp_path):
    slim = adapter.slim(KEPT[0])
    adapter.save_slim(slim, tmp_path / "budget0.500")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "budget0.500", trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "OptinSlimBertForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, slim(**batch).logits, rtol=0, atol=0)
    # The adapter reads the reloaded model (its classes are the remote-code copies): structure and
    # MACs recounted from weight shapes match the kept selection.
    reloaded_adapter = adapter_for(reloaded)
    heads, neurons = KEPT[0].counts("head"), KEPT[0].counts("neuron")
    assert reloaded_adapter.unit_counts("head") == heads
    assert reloaded_adapter.unit_counts("neuron") == neurons
    counted = flops.count_linear_attention_macs(reloaded_adapter.layer_linear_shapes(), 12.0)
    assert counted == pytest.approx(flops.encoder_macs(heads, neurons, 12.0, 32, 8), rel=1e-12)
    _, _, logits = reloaded_adapter.forward(batch)
    torch.testing.assert_close(logits, slim(**batch).logits, rtol=0, atol=1e-5)
