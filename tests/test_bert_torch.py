"""The plain-torch BERT of the text scoring jobs (optin.arch.bert_torch) against transformers' own:
same weights, same adapter, and the scores of every unit kind must come out identical."""

import json

import pandas as pd
import pytest
import torch
from conftest import padded_batch, tiny_bert
from transformers import BertForSequenceClassification

from optin.arch import adapter_for, bert_torch, family
from optin.methods.kwon import fisher_scores
from optin.engine.settings import OptinMethod
from optin.engine.scoring import run_teacher, score_layer


@pytest.fixture
def checkpoint(tmp_path):
    tiny_bert(seed=5).save_pretrained(tmp_path)
    return tmp_path


def test_loads_the_same_weights_and_module_tree(checkpoint):
    hf = BertForSequenceClassification.from_pretrained(checkpoint).eval()
    plain = family("bert").load_for_scoring(checkpoint)
    assert isinstance(plain, bert_torch.TorchBertForSequenceClassification)
    assert plain.state_dict().keys() == {k for k in hf.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}
    batch = padded_batch(seed=2)
    embedded = hf.bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    assert torch.equal(plain.bert.embeddings(batch["input_ids"], batch["token_type_ids"]), embedded)
    # the adapter's forward on the plain model reproduces transformers' own forward
    logits = run_teacher(adapter_for(plain, "bert"), batch).logits
    torch.testing.assert_close(logits, hf(**batch).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", [{"semantics": "paper"}, {"semantics": "reference"}])
def test_optin_scores_equal_transformers_bert(checkpoint, config):
    method = OptinMethod.from_config(config)
    batch = padded_batch(seed=2)
    tables = []
    for model in (BertForSequenceClassification.from_pretrained(checkpoint).eval(), bert_torch.load(checkpoint)):
        adapter = adapter_for(model, "bert")
        teacher = run_teacher(adapter, batch, include_padding=method.md_include_padding)
        tables.append(pd.concat([score_layer(adapter, teacher, layer, kind, method, seed=1, chunk=4)
                                 for layer in range(adapter.num_layers) for kind in ("head", "neuron")]))
    pd.testing.assert_frame_equal(*tables, check_exact=True)


def test_kwon_scores_equal_transformers_bert(checkpoint):
    batch, labels = padded_batch(seed=2), torch.tensor([0, 1, 2, 0, 1, 2])
    hf = fisher_scores(adapter_for(BertForSequenceClassification.from_pretrained(checkpoint).eval(), "bert"), batch, labels)
    plain = fisher_scores(adapter_for(bert_torch.load(checkpoint), "bert"), batch, labels)
    pd.testing.assert_frame_equal(hf, plain, check_exact=True)


def test_an_unsupported_checkpoint_goes_through_transformers(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["hidden_act"] = "gelu_new"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_act='gelu_new'"):
        bert_torch.load(checkpoint)
    assert isinstance(family("bert").load_for_scoring(checkpoint), BertForSequenceClassification)
