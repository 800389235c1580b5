"""The three places that pin the environment agree: pyproject.toml, envs/optin.yaml, requirements.lock."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)\s*", line)
        assert match, f"not an exact pin: {line!r}"
        found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return pins(project["dependencies"])


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "envs" / "optin.yaml").read_text())


def test_conda_env_pins_exactly_the_pyproject_dependencies():
    env = conda_env()
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins([p for p in pip if not p.startswith("-e")]) == pyproject_pins()
    assert "-e ../" in pip, "the env must install this package (optin) itself"


def test_conda_env_python_satisfies_requires_python():
    env = conda_env()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == "python=3.11" and requires == ">=3.11,<3.12"


def test_lock_file_holds_every_direct_pin_at_the_same_version():
    lock = pins(line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith("#"))
    direct = pyproject_pins()
    disagree = {name: (version, lock.get(name)) for name, version in direct.items() if lock.get(name) != version}
    assert not disagree, f"pyproject pin vs requirements.lock: {disagree}"


def test_pin_parser_rejects_ranges():
    with pytest.raises(AssertionError, match="torch>=2"):
        pins(["torch>=2"])
