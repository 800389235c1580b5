"""What each rule script pays in imports before it does any work (`make profile-imports`).

A job's imports are its script's module-level imports plus, for the jobs that build a model, the
model and adapter modules of its family (optin.arch.registry), which the scripts import through
the registry at run time. Each (script, family) pair is timed in a fresh interpreter, the way
Snakemake starts a job, after one untimed warm-up run that fills the page cache.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Other families' code, which a job of the family must never load (the registry keeps families apart).
FOREIGN = {
    "bert": ("timm", "optin.arch.vit", "optin.arch.swin", "optin.arch.cnn", "optin.models.cnn", "optin.models.vision",
             "optin.models.segmentation"),
    "vit": ("optin.arch.bert", "optin.arch.swin", "optin.arch.cnn", "optin.models.cnn", "optin.models.segmentation"),
    "mask2former_swin": ("timm", "optin.arch.bert", "optin.arch.vit", "optin.arch.cnn", "optin.models.cnn"),
    "cifar_resnet": ("timm", "transformers", "optin.arch.bert", "optin.arch.vit", "optin.arch.swin"),
    "llama": ("timm", "optin.arch.bert", "optin.arch.vit", "optin.arch.swin", "optin.arch.cnn", "optin.models.cnn",
              "optin.models.vision", "optin.models.segmentation"),
}
# Scripts that load a model of the job's family; the rest are family-free.
FAMILY_SCRIPTS = ("prepare_model", "calibrate", "score_shard", "score", "tune_mask",
                  "latency_table", "evaluate")
# Of those, the ones that load it through the family's scoring loader (Family.load_for_scoring).
SCORING_SCRIPTS = ("score_shard", "score", "tune_mask")
WATCHED = ("torch", "transformers", "timm", "torchvision", "pandas", "matplotlib")


def forbidden_modules(family: str) -> set[str]:
    """What a job of ``family`` must never load: FOREIGN, and the packages the family hides."""
    from optin.arch.registry import family as family_entry

    return set(FOREIGN.get(family, ())) | set(family_entry(family).unused_packages)


def script_imports(path: Path) -> list[str]:
    """The module-level import statements of a rule script, as source lines."""
    tree = ast.parse(path.read_text())
    return [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def job_code(script: Path, family: str | None) -> str:
    lines = ["import os", "os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')"]
    if family:  # what start_job(family=...) does before the script's heavy imports
        lines += ["from optin.arch.registry import family as _family", "from optin.workflow.runtime import hide_packages",
                  f"_f = _family({family!r})", "hide_packages(_f.unused_packages)"]
    lines += script_imports(script)
    if family:
        loader = "_f.scoring_loader_module()" if script.stem in SCORING_SCRIPTS else "_f.model_module"
        lines += ["import importlib", f"importlib.import_module({loader})", "importlib.import_module(_f.adapter_module)"]
    return "\n".join(lines)


def measure(code: str, repeats: int, warm_up: bool = True) -> tuple[float, list[str]]:
    """Median wall seconds of the imports (interpreter start-up excluded) and the modules loaded."""
    # hidden packages (optin.workflow.runtime.hide_packages) sit in sys.modules as None: not loaded
    probe = code + ("\nimport sys, json, time\n"
                    "print(json.dumps([time.perf_counter() - _t0, sorted(k for k, v in sys.modules.items() if v is not None)]))")
    probe = "import time\n_t0 = time.perf_counter()\n" + probe
    if warm_up:
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    times, modules = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        seconds, modules = json.loads(out.stdout.splitlines()[-1])
        times.append(seconds)
    return statistics.median(times), modules


def profile(scripts_dir: Path, families: list[str], repeats: int) -> list[dict]:
    rows = []
    for script in sorted(scripts_dir.glob("*.py")):
        for family in (families if script.stem in FAMILY_SCRIPTS else [None]):
            seconds, modules = measure(job_code(script, family), repeats)
            loaded = set(modules)
            foreign = sorted(forbidden_modules(family) & loaded) if family else []
            rows.append({"script": script.stem, "family": family or "-", "import_s": round(seconds, 2),
                         "loads": [m for m in WATCHED if m in loaded], "foreign": foreign})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=Path, default=Path("scripts"))
    parser.add_argument("--families", default="bert,vit,mask2former_swin,cifar_resnet")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = profile(args.scripts, [f for f in args.families.split(",") if f], args.repeats)
    print(f"{'script':24s} {'family':18s} {'imports s':>9s}  loads")
    for row in rows:
        flag = f"  FOREIGN: {', '.join(row['foreign'])}" if row["foreign"] else ""
        print(f"{row['script']:24s} {row['family']:18s} {row['import_s']:9.2f}  {', '.join(row['loads'])}{flag}")
    print(f"(median of {args.repeats} fresh interpreters each; {time.perf_counter() - start:.0f} s in all)")
    if any(row["foreign"] for row in rows):
        raise SystemExit("a job imports another family's code")


if __name__ == "__main__":
    main()
