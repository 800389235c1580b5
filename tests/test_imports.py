"""A job imports the code of its own model family only (optin.arch.registry is lazy), and the light
jobs (mask search, tables, figures) never import torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from optin.arch import registry
from optin.import_cost import forbidden_modules, job_code, measure

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("script,family", [("score_shard", "bert"), ("evaluate", "bert"), ("calibrate", "bert"),
                                           ("prepare_model", "bert"), ("evaluate", "cifar_resnet"), ("score_shard", "llama"),
                                           ("llm_evaluate", "llama"), ("latency_table", "vit"), ("score_nvit", "bert")])
def test_a_job_imports_only_its_own_family(script, family):
    # for bert this includes torchvision and scipy, which transformers would import (Family.unused_packages)
    _, modules = measure(job_code(SCRIPTS / f"{script}.py", family), repeats=1, warm_up=False)
    loaded = set(modules)
    assert "torch" in loaded and registry.family(family).adapter_module in loaded  # the probe ran the job's imports
    assert not loaded & forbidden_modules(family)


@pytest.mark.parametrize("script", ["solve", "merge_scores", "collect", "figures", "method_tables", "unit_figures",
                                    "llm_solve", "llm_merge_scores", "llm_report"])
def test_light_jobs_never_import_torch(script):
    _, modules = measure(job_code(SCRIPTS / f"{script}.py", None), repeats=1, warm_up=False)
    assert "torch" not in modules and "transformers" not in modules


@pytest.mark.parametrize("script", ["score_shard", "score_kwon", "score_baseline", "tune_mask"])
def test_text_scoring_jobs_do_not_import_transformers_model_code(script):
    # optin.arch.bert_torch stands in for transformers' BERT in these jobs (import cost, README)
    _, modules = measure(job_code(SCRIPTS / f"{script}.py", "bert"), repeats=1, warm_up=False)
    loaded = set(modules)
    assert {"torch", "optin.arch.bert", "optin.arch.bert_torch"} <= loaded
    assert not {m for m in loaded if m.startswith(("transformers", "torchvision", "scipy"))}


def test_an_unknown_family_is_named():
    from optin.arch import adapter_for

    with pytest.raises(ValueError, match="unknown model family 'gpt2'"):
        adapter_for(object(), "gpt2")


def test_a_hidden_package_looks_uninstalled_to_libraries_that_probe_for_it():
    code = ("import importlib.util\nfrom optin.runtime import hide_packages\nhide_packages(['torchvision'])\n"
            "assert importlib.util.find_spec('torchvision') is None\n"
            "try:\n    import torchvision\nexcept ModuleNotFoundError:\n    print('hidden')\n"
            "import torch\nhide_packages(['torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "hidden"
    assert "cannot hide torch: this process has already imported it" in out.stderr
