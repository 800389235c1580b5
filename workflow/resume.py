"""Resume an interrupted run (kill -9, a closed terminal, a lost node): lift snakemake's lock, then
build what is missing, rerunning only the jobs that were cut off (--rerun-incomplete).

It refuses while a snakemake process, or a job one started, still runs in this working directory:
the lock then protects that run, and unlocking would let two runs write the same files.

    python workflow/resume.py SNAKEMAKE_COMMAND [ARGS ...]     (from the run's working directory)
    make resume                                                (the default run)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def snakemake_processes_in(directory: Path) -> list[tuple[int, str]]:
    """(pid, command line) of the processes running snakemake or a snakemake job script with their
    working directory in ``directory``; this process and its parent (make's shell) excluded."""
    ours = {os.getpid(), os.getppid()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = Path(os.readlink(entry / "cwd")).resolve()
        except OSError:  # gone, or not ours to read
            continue
        if "snakemake" in command and cwd == directory:
            found.append((int(entry.name), command))
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    here = Path.cwd().resolve()
    active = snakemake_processes_in(here)
    if active:
        pid, command = active[0]
        print(f"resume: snakemake is still running in {here} (pid {pid}: {command[:160]}); "
              f"let it finish or stop it (kill {' '.join(str(p) for p, _ in active)}), then resume", file=sys.stderr)
        return 1
    subprocess.run([*argv, "--unlock"], check=True)
    os.execvp(argv[0], [*argv, "--rerun-incomplete"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
