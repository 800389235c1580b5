"""What a reader of the README and docs/ would paste: the fenced code blocks and the inline
commands, and the checks that keep them true (tests/test_docs.py; the slim-model examples run
against the tiny workflow's results in tests/test_tiny_pipeline.py).

A command is checked by what it names: make targets exist in the Makefile; a snakemake command's
config files, profiles and target rules exist and its configuration passes the schema and
optin.workflow.config (overlays that a page writes in a yaml block count as files); python modules,
scripts and console scripts exist. A yaml block is an overlay (validated on config.yaml) or a
verbatim excerpt of a file in the repository. A python block compiles, and the results paths it
names are ones a run writes.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from test_workflow import merged  # snakemake's merge of a later --configfile

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands a page may show that the tests do not run or resolve: the shell, git, package managers,
# and the scheduler's own tools (the Slurm profile test runs those for real: make test-slurm).
UNCHECKED = {"cd", "git", "ls", "cp", "mkdir", "export", "pip", "apt-get", "sbatch", "squeue", "sacct", "scontrol",
             "sinfo", "sacctmgr", "cat", "du", "watch", "tail"}
# snakemake options and how many values each takes (None: every value up to the next option)
SNAKEMAKE_OPTIONS = {"--cores": 1, "-c": 1, "--configfile": None, "--workflow-profile": 1, "--profile": 1, "-n": 0,
                     "--dry-run": 0, "--report": 1, "--resources": None, "--default-resources": None, "--sdm": 1,
                     "-s": 1, "--snakefile": 1, "--directory": 1, "--rerun-incomplete": 0, "--unlock": 0, "-p": 0,
                     "--summary": 0, "--lint": 0, "--verbose": 0, "--keep-going": 0, "-k": 0}


@dataclass
class Block:
    page: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    blocks, lines = [], page.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if start is None:
                start, language = number, line[3:].strip()
            else:
                blocks.append(Block(page, start, language, "\n".join(lines[start:number - 1])))
                start = None
    assert start is None, f"{page}: unclosed code block at line {start}"
    return blocks


def inline_commands(page: Path) -> list[Block]:
    """Inline code spans that are whole commands (``make …``, ``snakemake …``, ``.venv/bin/…``)."""
    found = []
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for match in re.finditer(r"`([^`\n]+)`", text):
        span = match.group(1).strip()
        if re.match(r"(make [a-z]|snakemake |\.venv/bin/|python -m |optin-(bench|precision|import-cost)\b)", span):
            found.append(Block(page, text[: match.start()].count("\n") + 1, "bash", span))
    return found


def shell_commands(text: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append(shlex.split(line, comments=True))
    return [c for c in commands if c]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


def rule_names() -> set[str]:
    names = set()
    for path in [*(ROOT / "rules").glob("*.smk"), ROOT / "workflow" / "Snakefile"]:
        names |= set(re.findall(r"^(?:local)?rule (\w+):", path.read_text(), flags=re.M))
    return names


def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def overlay_name(block: Block) -> str | None:
    first = block.text.splitlines()[0] if block.text else ""
    match = re.match(r"#\s*([\w./-]+\.ya?ml)\s*$", first)
    return match.group(1) if match else None


def schema_keys() -> set[str]:
    return set(yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())["properties"])


def is_overlay(block: Block) -> bool:
    data = yaml.safe_load(block.text)
    return isinstance(data, dict) and bool(data) and set(data) <= schema_keys()


def local_paths(config: dict) -> list[str]:
    """Paths a configuration names on the user's disk (dataset files, local checkpoints)."""
    paths = []
    for dataset in config.get("datasets", {}).values():
        source = dataset.get("source", {})
        paths += [source[k] for k in ("path", "train", "test", "root") if k in source]
    for model in config.get("models", {}).values():
        if model.get("source", {}).get("kind") == "local":
            paths.append(model["source"]["path"])
    return paths


def config_errors(files: list[str], overlays: dict[str, dict], scratch: Path) -> list[str]:
    """What the workflow would refuse in ``--configfile files``: schema and optin.workflow.config checks,
    with the files a page's own overlay names on the user's disk stood in by empty ones."""
    from optin.workflow.config import ConfigError, check, validate_schema

    config: dict = {}
    for name in files:
        if name in overlays:
            config = merged(config, overlays[name])
        elif (ROOT / name).is_file():
            config = merged(config, yaml.safe_load((ROOT / name).read_text()) or {})
        else:
            return [f"--configfile {name}: no such file in the repository, and no page writes it"]
    try:
        validate_schema(config, ROOT / "workflow/schemas/config.schema.yaml")
    except Exception as error:  # noqa: BLE001 - the message is the finding
        return [f"schema: {error}"]
    stand_ins = {}
    for path in local_paths(config):
        target = scratch / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix:
            target.touch()
        else:
            target.mkdir(exist_ok=True)
            (target / "config.json").write_text("{}")  # a save_pretrained directory
        stand_ins[path] = str(target)
    config = yaml.safe_load(yaml.safe_dump(config))
    for section in ("datasets", "models"):
        for entry in config.get(section, {}).values():
            source = entry.get("source", {})
            for key in ("path", "train", "test", "root"):
                if source.get(key) in stand_ins:
                    source[key] = stand_ins[source[key]]
    try:
        check(config, base_dir=ROOT)
    except ConfigError as error:
        return [str(error)]
    return []


def placeholder(arg: str) -> bool:
    """``<file>``, ``...``: a template the reader fills in, not checked."""
    return bool(re.search(r"<[\w -]+>|\.\.\.|…", arg))


def command_errors(command: list[str], overlays: dict[str, dict], scratch: Path) -> list[str]:
    command = [arg for arg in command if not placeholder(arg)]
    while command and re.match(r"^[A-Z_]+=", command[0]):  # VAR=value prefixes
        command = command[1:]
    program = command[0]
    name = program.split("/")[-1]
    if name in UNCHECKED:
        return []
    if name == "make":
        errors = []
        for arg in command[1:]:
            if "=" in arg:
                key, value = arg.split("=", 1)
                if key == "CONFIG" and not (ROOT / value).is_file():
                    errors.append(f"make {key}={value}: no such file")
            elif arg not in make_targets():
                errors.append(f"make {arg}: no such target in the Makefile")
        return errors
    if name == "snakemake":
        return snakemake_errors(command[1:], overlays, scratch)
    if name in ("python", "python3", "python3.11"):
        if command[1:2] == ["-m"]:
            module = command[2]
            return [] if importlib.util.find_spec(module) else [f"python -m {module}: no such module"]
        return [] if (ROOT / command[1]).is_file() else [f"python {command[1]}: no such script"]
    if name in console_scripts():
        return []
    if (ROOT / program).is_file():  # a script of the repository (tests/cluster/slurm.sh, workflow/resume.py)
        return []
    return [f"{program}: a command the docs tests do not know (add a check in tests/doc_examples.py)"]


def snakemake_errors(args: list[str], overlays: dict[str, dict], scratch: Path) -> list[str]:
    errors, files, position = [], [], 0
    while position < len(args):
        arg = args[position]
        if arg == "--":
            position += 1
            continue
        if arg.startswith("-"):
            if arg not in SNAKEMAKE_OPTIONS:
                return [f"snakemake {arg}: an option the docs tests do not know"]
            arity = SNAKEMAKE_OPTIONS[arg]
            values = []
            position += 1
            while (position < len(args) and not args[position].startswith("-") and (arity is None or len(values) < arity)
                   and (arg != "--configfile" or args[position].endswith((".yaml", ".yml")))):
                values.append(args[position])
                position += 1
            if arg == "--configfile":
                files += values
            elif arg in ("--workflow-profile", "--profile") and not (ROOT / values[0] / "config.yaml").is_file():
                errors.append(f"snakemake {arg} {values[0]}: no profile there")
            continue
        if arg not in rule_names() and not arg.startswith("results/"):
            errors.append(f"snakemake target {arg!r}: neither a rule nor a results path")
        position += 1
    return errors + config_errors(files or ["config.yaml"], overlays, scratch)


def results_paths(code: str) -> list[str]:
    return re.findall(r"""["'](results/[^"']+)["']""", code)


def imports_resolve(code: str) -> list[str]:
    errors = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            errors += [f"import {a.name}: no such module" for a in node.names if not importlib.util.find_spec(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if not importlib.util.find_spec(node.module):
                errors.append(f"from {node.module}: no such module")
                continue
            module = importlib.import_module(node.module)
            errors += [f"from {node.module} import {a.name}: no such name" for a in node.names
                       if not hasattr(module, a.name) and not importlib.util.find_spec(f"{node.module}.{a.name}")]
    return errors
