"""optin.prune, the library's front door, on one tiny model of every family: the slim model it
returns computes what the dense model computes under its mask, the mask meets the budget under the
family's own cost model (a brute-force recount), and bad input stops before any scoring.
(tests/test_tiny_pipeline.py holds it to the workflow's masks on the workflow's own inputs.)"""

import pytest
import torch

import optin
from families import FAMILIES
from optin.arch import adapter_for


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_prune_slims_every_family_to_its_budget_and_the_slim_model_equals_the_masked_one(name):
    case = FAMILIES[name]
    dense, batch = case.build().eval(), case.batch()
    pruned = optin.prune(dense, batch, budget=0.6)
    assert pruned.family == ("vit" if name == "vit_timm" else name)
    assert 0.0 < pruned.macs["kept"] <= 0.6 * pruned.macs["dense"] + 1e-6
    assert pruned.macs["ratio"] == pytest.approx(pruned.macs["kept"] / pruned.macs["dense"])
    kinds = set(pruned.scores["kind"])
    assert kinds == set(case.kinds) - {"token"}    # every unit scored once; tokens only for OPTIN-tau
    assert len(pruned.scores) == sum(sum(adapter_for(dense).unit_counts(k)) for k in kinds)
    assert sum(p.numel() for p in pruned.model.parameters()) < sum(p.numel() for p in dense.parameters())
    with torch.no_grad():
        masked = adapter_for(dense).masked_logits(batch, pruned.kept)
        slim = adapter_for(pruned.model).forward(batch)[2]   # the slim model's own forward, no masks
    assert torch.allclose(slim, masked, atol=1e-4)


def registered_methods(family_case: str) -> list[str]:
    """Every method and variant of the registry that applies to a tiny family and that optin.prune
    runs (token schedules run in the workflow)."""
    from optin.arch import family
    from optin.methods.registry import METHODS, as_entry, method

    name = "vit" if family_case == "vit_timm" else family_case
    return [m for m in sorted({*METHODS, *(v for e in METHODS.values() for v in e.variants)})
            if method(m).applies_to(family(name)) and not as_entry(m).get("prune_tokens")]


# What a registered method cannot do on a family, refused with a message that says why: timm ViTs
# (family vit) name no weights per unit (weight magnitude, NViT's groups, Kwon et al.'s tuning);
# the authors' fresh MD row subsets need taps of one size, which a ResNet's stages are not.
REFUSED = {("vit_timm", "magnitude"): "TimmVitAdapter has no weight names for magnitude scores",
           ("vit_timm", "nvit"): "TimmVitAdapter names no projections for NViT's groups",
           ("vit_timm", "kwon_tuned"): "TimmVitAdapter does not name its layers' weights",
           ("cifar_resnet", "optin_reference"): "use fixed subsets \\(md_fresh_subsets: false\\)"}
METHOD_CASES = [(case, m) for case in sorted(FAMILIES) for m in registered_methods(case) if (case, m) not in REFUSED]


@pytest.mark.parametrize("name,method", METHOD_CASES, ids=[f"{c}-{m}" for c, m in METHOD_CASES])
def test_every_registered_method_prunes_every_family_it_applies_to(name, method):
    """optin.prune(method=...) for each (family, method) of the registries: the budget holds under
    the family's cost model, every unit is scored, and the slim model computes what the model it
    was cut from (the dense one, or its copy with tuned scales / FLAP's biases folded in) computes
    under the mask."""
    from optin.methods.registry import as_entry, method as method_entry

    case = FAMILIES[name]
    dense, batch = case.build().eval(), case.batch()
    entry = method_entry(method)
    with torch.no_grad():
        classes = adapter_for(dense).forward(batch)[2].shape[-1]
    labels = torch.arange(next(iter(batch.values())).shape[0]) % classes if entry.needs_labels else None
    calibration = [batch, batch] if as_entry(method).get("semantics") == "reference" else batch
    pruned = optin.prune(dense, calibration, budget=0.6, method=method, labels=labels, seed=1)
    assert pruned.method["kind"] == entry.name
    assert 0.0 < pruned.macs["kept"] <= 0.6 * pruned.macs["dense"] + 1e-6
    kinds = set(pruned.scores["kind"])
    assert kinds == set(case.kinds) - {"token"}
    assert len(pruned.scores) == sum(sum(adapter_for(dense).unit_counts(k)) for k in kinds)
    with torch.no_grad():
        masked = pruned.adapter.masked_logits(batch, pruned.kept)
        slim = adapter_for(pruned.model).forward(batch)[2]
    assert torch.allclose(slim, masked, atol=1e-4)


@pytest.mark.parametrize("name,method", sorted(REFUSED))
def test_a_method_a_family_cannot_run_is_refused_with_the_reason(name, method):
    case = FAMILIES[name]
    batch = case.batch()
    labels = torch.zeros(batch["pixel_values"].shape[0], dtype=torch.long)
    with pytest.raises((NotImplementedError, ValueError), match=REFUSED[name, method]):
        optin.prune(case.build().eval(), [batch, batch], budget=0.6, method=method, labels=labels)


def test_prune_keeps_the_most_important_units_a_brute_force_search_would():
    """On a 2-layer BERT with a uniform neuron cost, the kept heads and neurons are a top-k / top-m
    of the returned scores whose MACs fit, with the largest total importance (exhaustive check)."""
    from itertools import product

    from conftest import padded_batch, tiny_bert
    from optin.engine import flops

    dense = tiny_bert(layers=2)
    pruned = optin.prune(dense, padded_batch(), budget=0.5)
    scores = pruned.scores
    heads = scores[scores["kind"] == "head"].sort_values("importance", ascending=False, kind="stable")
    neurons = scores[scores["kind"] == "neuron"].sort_values("importance", ascending=False, kind="stable")
    s, d, dh = pruned.search["mac_seq_len"], 32, 8
    best = max((heads["importance"].iloc[:k].sum() + neurons["importance"].iloc[:m].sum(), k, m)
               for k, m in product(range(len(heads) + 1), range(len(neurons) + 1))
               if k * flops.head_macs(s, d, dh) + m * flops.neuron_macs(s, d) <= 0.5 * pruned.macs["dense"])
    assert (sum(map(len, pruned.kept["head"])), sum(map(len, pruned.kept["neuron"]))) == best[1:]


@pytest.mark.parametrize("kwargs,message", [
    ({"budget": 0.0}, "budget must be in"),
    ({"budget": 1.5}, "budget must be in"),
    ({"budget": 0.5, "method": "kwon"}, "method kind 'kwon' scores by the task loss: pass labels="),
    ({"budget": 0.5, "method": "flap_full"}, r"method kind 'flap' applies to families \['llama'\], not to a bert model"),
    ({"budget": 0.5, "method": "fap"}, "unknown method 'fap'; known kinds"),
    ({"budget": 0.5, "method": "kwon", "fisher_batch_size": 0}, "fisher_batch_size must be a positive integer"),
    ({"budget": 0.5, "method": "magnitude", "lambda_c": 0.2}, r"a magnitude method takes no settings \['lambda_c'\]"),
    ({"budget": 0.5, "method": {"lambda_cc": 1.0}}, "unknown OPTIN method setting"),
    ({"budget": 0.5, "method": {"prune_tokens": True}}, "prune_tokens"),
    ({"budget": 0.5, "method": {"same_batch": False}}, "a list of two batches"),
    ({"budget": 0.5, "method": {"budget_metric": "latency"}}, "needs latency_table"),
    ({"budget": 0.5, "family": "vgg"}, "no optin adapter handles BertForSequenceClassification"),
])
def test_bad_input_stops_with_a_message_that_names_it(model, kwargs, message):
    from conftest import padded_batch

    with pytest.raises((ValueError, TypeError), match=message):
        optin.prune(model, padded_batch(), **kwargs)


def test_a_calibration_that_is_not_a_batch_is_refused(model):
    with pytest.raises(ValueError, match="calibration must be a batch"):
        optin.prune(model, [torch.zeros(3)], budget=0.5)


def test_the_command_line_refuses_an_unknown_family_and_a_missing_file(tmp_path):
    from optin.cli import main

    with pytest.raises(SystemExit, match="--family 'bart': not a registered family"):
        main(["prune", "--family", "bart", "--checkpoint", str(tmp_path), "--calibration", str(tmp_path),
              "--budget", "0.5", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="--calibration .*gone.pt: no such file"):
        main(["prune", "--family", "bert", "--checkpoint", str(tmp_path), "--calibration", str(tmp_path / "gone.pt"),
              "--budget", "0.5", "--out", str(tmp_path / "out")])
