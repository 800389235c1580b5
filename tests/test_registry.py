"""The family registry (optin.arch.registry) is the one list of model families: the schema, the
config checks, the adapters and the rule scripts all go through it."""

import importlib
import inspect

import pytest
import yaml

from families import FAMILIES as TINY
from optin.arch import adapter_classes, adapter_for, family
from optin.arch.registry import FAMILIES
from optin.engine.cost import COST_MODELS
from test_workflow import ROOT

# What a family's model module must provide (docs/architecture.md, "Adding a model family").
MODEL_MODULE_API = ("load_checkpoint", "save_checkpoint", "prepare", "calibration")
# The tiny test models of tests/families.py -> their registry family (timm ViTs are family vit).
TINY_FAMILY = {"bert": "bert", "vit": "vit", "vit_timm": "vit", "mask2former_swin": "mask2former_swin",
               "cifar_resnet": "cifar_resnet", "vgg": "vgg", "llama": "llama"}


def test_the_schema_lists_exactly_the_registered_families():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["models"]["additionalProperties"]["properties"]["family"]["enum"]
    assert sorted(enum) == sorted(FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_module_provides_the_protocol(name):
    entry = family(name)
    models = entry.models()
    for function in MODEL_MODULE_API:
        assert callable(getattr(models, function, None)), f"{entry.model_module} lacks {function}"
    # Classification families are evaluated by scripts/evaluate.py; segmentation and decoder LMs have their own rules.
    assert callable(getattr(models, "evaluation", None)) == (entry.name not in ("mask2former_swin", "llama"))
    assert inspect.signature(models.prepare).parameters.keys() == {"job"}
    assert importlib.import_module(entry.adapter_module).ADAPTER_CLASSES
    assert set(entry.unit_kinds) <= {"head", "neuron", "token", "channel"}
    assert entry.cost_model in COST_MODELS   # optin.engine.cost: solve and optin.prune build it
    assert callable(entry.scoring_load_function()), entry.scoring_loader


@pytest.mark.parametrize("tiny", sorted(TINY))
def test_each_tiny_family_goes_through_the_registry(tiny):
    case, name = TINY[tiny], TINY_FAMILY[tiny]
    model = case.build()
    adapter = adapter_for(model, name)
    assert type(adapter) in adapter_classes(name)
    # the registry's unit kinds are what the engine scores for this family
    assert tuple(family(name).scored_kinds(1)) == case.kinds
    assert "token" not in family(name).scored_kinds(0)
    # and no other family's adapter claims the model
    others = [cls for other in FAMILIES if family(other).adapter_module != family(name).adapter_module
              for cls in adapter_classes(other)]
    assert not any(cls.handles(model) for cls in others)


def test_an_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model family 'gpt2'; known: \['bert'"):
        family("gpt2")


def test_every_registered_family_has_a_tiny_model_that_every_family_test_runs():
    # tests/families.py feeds the engine, slimming, device and optin.prune tests of every family: a
    # family registered without a tiny model there would pass them untested
    assert set(TINY) == set(TINY_FAMILY)
    assert set(TINY_FAMILY.values()) == set(FAMILIES)
