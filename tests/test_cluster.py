"""The tiny workflow through a real single-node Slurm (tests/cluster/slurm.sh), with both cluster
profiles as shipped plus the one edit docs/cluster-gpu.md asks for, compared byte for byte with a local run.

Runs with `make test-slurm` (pytest -m slurm) as root, where Debian's slurmctld/slurmd/munge are
installed; skipped elsewhere and in the plain test run.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, SNAKEMAKE, reproducible_files, snakemake, synthetic_sentences, tiny_config

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
SLURM = ROOT / "tests" / "cluster" / "slurm.sh"


def cluster_config(data: Path) -> dict:
    """The tiny text and CNN experiments (OPTIN, Kwon, magnitude): every kind of scoring job."""
    config = tiny_config(data)
    config["experiments"]["tiny"].update(methods=["optin", "kwon", "magnitude"], seeds=[0])
    config["experiments"]["tiny_cnn"]["methods"] = ["optin", "magnitude"]
    config["run"].update(experiments=["tiny", "tiny_cnn"], budgets=[0.5])
    return config


def edited_profile(name: str, tmp: Path, edits: dict[str, str]) -> Path:
    """A copy of workflow/profiles/<name> with docs/cluster-gpu.md's edits applied (old line -> new line)."""
    text = (ROOT / "workflow" / "profiles" / name / "config.yaml").read_text()
    for old, new in edits.items():
        assert old in text, (name, old)
        text = text.replace(old, new)
    profile = tmp / f"profile-{name}"
    profile.mkdir()
    (profile / "config.yaml").write_text(text)
    return profile


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0:
        pytest.skip("needs root to start slurmctld, slurmd and munged")
    if not all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch")):
        pytest.skip("Debian's slurmctld, slurmd, slurm-client and munge are not installed (make test-slurm installs them)")
    subprocess.run([str(SLURM), "up"], check=True, timeout=300)
    yield
    subprocess.run([str(SLURM), "down"], check=False, timeout=120)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    synthetic_sentences(base / "sentences.csv")
    config = cluster_config(base / "sentences.csv")
    result = snakemake(base / "local", config, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base, config


def cluster_jobs(log: str) -> int:
    """Jobs snakemake ran on the cluster: those its log does not mark as local rules."""
    return len(re.findall(r"^rule \w+:", log, flags=re.M))


def slurm_jobs() -> dict[str, str]:
    """Slurm job id -> state of every job slurmctld still knows."""
    listing = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in listing.splitlines())


# Faster status polling than a real cluster needs: the jobs take seconds.
POLLING = ["--seconds-between-status-checks", "2"]


@pytest.mark.parametrize("profile,edits,extra", [
    ("slurm", {'slurm_partition: "CHANGE_ME_partition"': 'slurm_partition: "cpu"',
               "# slurm-status-command: squeue": "slurm-status-command: squeue"},
     ["--slurm-init-seconds-before-status-checks", "2"]),
    ("cluster-generic-sbatch", {"-p CHANGE_ME_partition": "-p cpu"}, []),
])
def test_tiny_workflow_through_slurm_matches_a_local_run(slurm, local_run, tmp_path, profile, edits, extra):
    base, config = local_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = slurm_jobs()
    result = subprocess.run([*SNAKEMAKE, "--workflow-profile", str(edited_profile(profile, tmp_path, edits)), *POLLING, *extra],
                            cwd=run, capture_output=True, text=True, timeout=3600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    # Every non-local job went through Slurm and completed there (without accounting, slurmctld
    # keeps finished jobs for MinJobAge = 600 s, long enough for squeue to list them).
    ran = {job: state for job, state in slurm_jobs().items() if job not in before}
    assert len(ran) == cluster_jobs(log) > 0, (ran, log[-3000:])
    assert set(ran.values()) == {"COMPLETED"}
    if profile == "cluster-generic-sbatch":
        assert {p.stem for p in (run / "logs" / "cluster").glob("*.out")} == set(ran)
    local = base / "local"
    files = reproducible_files(local)
    assert files == reproducible_files(run) and len(files) > 10
    for rel in files:
        assert (local / rel).read_bytes() == (run / rel).read_bytes(), rel
