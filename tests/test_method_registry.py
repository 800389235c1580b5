"""The method registry (optin.methods.registry) is the one list of pruning methods: rules, solve,
tables, plots, config checks and optin.prune read it, and no method is named anywhere else."""

import ast
import re

import pytest
import yaml

import optin
from optin.arch.registry import FAMILIES
from optin.methods import registry
from optin.methods.registry import METHODS, Method, Variant, names
from test_workflow import ROOT

# Where a method's name belongs: its registry entry and its own module.
OWN_PLACES = {"optin/methods/registry.py"}


def method_literals(text: str, suffix: str) -> list[tuple[int, str]]:
    """(line, name) of every string that is exactly a registered method name."""
    known = set(names())
    if suffix == ".py":
        return [(node.lineno, node.value) for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known]
    return [(i, m.group(1)) for i, line in enumerate(text.splitlines(), 1)
            for m in re.finditer(r"[\"']([A-Za-z0-9_]+)[\"']", line) if m.group(1) in known]


def test_no_method_is_named_outside_its_registry_entry():
    files = [*ROOT.glob("optin/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("rules/*.smk"), ROOT / "workflow/Snakefile"]
    assert len(files) > 60
    found = {f"{path.relative_to(ROOT)}:{line}: {name!r}" for path in files
             if path.relative_to(ROOT).as_posix() not in OWN_PLACES
             for line, name in method_literals(path.read_text(), path.suffix)}
    assert found == set()


def test_the_literal_check_finds_a_method_name():
    assert method_literals('x = 1\nif kind == "kwon":\n    pass\n', ".py") == [(2, "kwon")]
    assert method_literals("method=methods_of_kind('nvit', 'random')", ".smk") == [(1, "nvit"), (1, "random")]
    assert method_literals('print("optimal")', ".py") == []


def test_every_entry_is_complete_and_its_functions_exist():
    for entry in METHODS.values():
        assert entry.score_scale in registry.SCORE_SCALES and entry.scoring_passes in registry.SCORING_PASSES
        assert callable(entry.function()), entry.scorer
        if entry.stage_settings:
            assert callable(entry.function(entry.mask_stages)) and set(entry.stage_settings) <= set(entry.settings)
        assert entry.families is None or set(entry.families) <= set(FAMILIES)
        assert any(entry.applies_to(f) for f in FAMILIES.values()), entry.name
        assert not (entry.needs_gradients and entry.scoring_passes not in ("forward_backward",)), entry.name
        for variant in entry.variants.values():
            registry.resolved_settings(registry.as_entry(next(n for n, v in entry.variants.items() if v is variant)))
    # exactly one sharded method: the engine's (score_shard, merge_scores)
    assert [m.name for m in METHODS.values() if m.sharded] == [registry.SHARDED]
    assert registry.cost_reference() in METHODS


def test_the_default_config_names_its_methods_by_registered_kinds_and_variants():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for name, entry in config["methods"].items():
        kind = registry.kind_of(entry)
        if name in registry.variant_names():   # a variant's settings are the registry's
            assert registry.as_entry(name) == {"kind": kind, **{k: v for k, v in entry.items() if k != "kind"}}, name


def test_the_schema_documents_the_registered_kinds():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    description = schema["properties"]["methods"]["description"]
    assert all(kind in description for kind in METHODS), description


def test_an_unknown_method_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'wanda'; known kinds: \['flap'"):
        registry.method("wanda")
    with pytest.raises(ValueError, match=r"method key 'kind' must be one of"):
        registry.kind_of({"kind": "wanda"})


def test_add_a_method_recipe_one_module_and_one_entry(monkeypatch):
    """docs/architecture.md, "Adding a method": a toy method (every head and neuron scored by its
    index) registered in the test alone, then run by optin.prune and the config checks with no other
    change: the settings are resolved, unknown ones refused, and the scores enter the search."""
    from conftest import padded_batch, tiny_bert
    from optin.workflow.config import _method_fit_errors

    toy = Method("toy_index", "scores each unit by its index (a toy)", scorer="toy_method:score", style=("#123456", "o"),
                 native_resolution="single units", score_scale="per_kind", scoring_passes="none", needs_calibration=False,
                 unit_kinds=("head", "neuron"), settings={"reverse": False},
                 variants={"toy_reversed": Variant({"reverse": True}, ("#123456", "s"))})
    module = type(optin)("toy_method")

    def score(adapter, calibration, settings, seed):
        import pandas as pd

        rows = [{"layer": layer, "kind": kind, "index": i, "importance": float(-i if settings["reverse"] else i)}
                for kind in ("head", "neuron") for layer, count in enumerate(adapter.unit_counts(kind)) for i in range(count)]
        return pd.DataFrame(rows)

    module.score = score
    monkeypatch.setitem(__import__("sys").modules, "toy_method", module)
    monkeypatch.setitem(METHODS, toy.name, toy)

    assert registry.resolved_settings({"kind": "toy_index"}) == {"kind": "toy_index", "reverse": False, "budget_metric": "macs"}
    with pytest.raises(ValueError, match=r"a toy_index method takes no settings \['revers'\]"):
        registry.resolved_settings({"kind": "toy_index", "revers": True})
    assert _method_fit_errors("experiments.e", FAMILIES["bert"], "t", {"kind": "toy_index"}) == []
    assert "applies to unit kinds ['head', 'neuron'], not to a cifar_resnet model" in \
        _method_fit_errors("experiments.e", FAMILIES["cifar_resnet"], "t", {"kind": "toy_index"})[0]
    dense = tiny_bert(layers=2)
    forward = optin.prune(dense, padded_batch(), budget=0.6, method="toy_index")
    backward = optin.prune(dense, padded_batch(), budget=0.6, method="toy_reversed")
    # per layer, the kept neurons are the highest indices in one, the lowest in the other
    for high, low in zip(forward.kept["neuron"], backward.kept["neuron"], strict=True):
        if high and low:
            assert min(high) >= max(low)
    assert registry.style("toy_reversed") == ("#123456", "s")
