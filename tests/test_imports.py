"""A job imports the code of its own model family only (optin.arch.registry is lazy), and the light
jobs (mask search, tables, figures) never import torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from optin.arch import registry
from optin.tools.import_cost import forbidden_modules, job_code, measure

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("script,family", [("score_shard", "bert"), ("evaluate", "bert"), ("calibrate", "bert"),
                                           ("prepare_model", "bert"), ("evaluate", "cifar_resnet"), ("score_shard", "llama"),
                                           ("llm_evaluate", "llama"), ("latency_table", "vit"), ("score", "bert")])
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


@pytest.mark.parametrize("script", ["score_shard", "score", "tune_mask"])
def test_text_scoring_jobs_do_not_import_transformers_model_code(script):
    # optin.arch.bert_torch stands in for transformers' BERT in these jobs (import cost, docs/performance.md)
    _, modules = measure(job_code(SCRIPTS / f"{script}.py", "bert"), repeats=1, warm_up=False)
    loaded = set(modules)
    assert {"torch", "optin.arch.bert", "optin.arch.bert_torch"} <= loaded
    assert not {m for m in loaded if m.startswith(("transformers", "torchvision", "scipy"))}


def test_an_unknown_family_is_named():
    from optin.arch import adapter_for

    with pytest.raises(ValueError, match="unknown model family 'gpt2'"):
        adapter_for(object(), "gpt2")


def test_a_hidden_package_looks_uninstalled_to_libraries_that_probe_for_it():
    code = ("import importlib.util\nfrom optin.workflow.runtime import hide_packages\nhide_packages(['torchvision'])\n"
            "assert importlib.util.find_spec('torchvision') is None\n"
            "try:\n    import torchvision\nexcept ModuleNotFoundError:\n    print('hidden')\n"
            "import torch\nhide_packages(['torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "hidden"
    assert "cannot hide torch: this process has already imported it" in out.stderr


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source (function-level imports
    too: a lazy import still ties the two modules together)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from pkg import sub` imports the submodule; `from pkg import name` the package
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_the_library_has_no_import_cycles():
    graph = import_graph(Path(__file__).resolve().parents[1] / "optin")
    assert {"optin.workflow.config", "optin.workflow.sweeps", "optin.arch.cnn", "optin.models.cnn"} <= set(graph)  # the walk saw them
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_lazy_cycle_through_a_package(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("from pkg import a\ng = 1\n")
    (package / "d.py").write_text("from pkg import c\n")
    assert import_cycles(import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


# The library's layers, bottom up (docs/architecture.md, "Layout"): the engine, the families (their
# adapters, loading and data), the methods, and what uses them all (the front door, the workflow
# support, the tools).
LAYERS = {"engine": 0, "arch": 1, "models": 1, "data": 1, "reference": 1, "methods": 2,
          "pruning": 3, "cli": 3, "workflow": 3, "tools": 3}
# The one import from a lower layer to a higher one: the engine runs every family through the
# adapter protocol (optin/arch/base.py).
UPWARD_ALLOWED = {("optin.engine.scoring", "optin.arch.base")}


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["pruning"]


def test_the_library_imports_downward_but_for_one_named_exception():
    graph = import_graph(Path(__file__).resolve().parents[1] / "optin")
    upward = {(module, other) for module, imported in graph.items() for other in imported
              if layer_of(other) > layer_of(module)}
    assert upward == UPWARD_ALLOWED


def test_no_library_module_grows_past_about_500_lines():
    sizes = {path.relative_to(SCRIPTS.parent).as_posix(): len(path.read_text().splitlines())
             for path in (SCRIPTS.parent / "optin").rglob("*.py")}
    assert len(sizes) > 50
    assert {path: n for path, n in sizes.items() if n > 550} == {}
