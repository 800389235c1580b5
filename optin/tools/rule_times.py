"""Where a run's time went, per rule, from Snakemake's benchmark files (`make rule-times`).

Each job of the workflow writes benchmarks/<rule>/...tsv (wall seconds, CPU load); this sums them
per rule, so that a change to the default configuration can be judged by its cost.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def rule_times(benchmarks: Path) -> list[dict]:
    jobs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in sorted(benchmarks.glob("**/*.tsv")):
        rows = list(csv.DictReader(path.open(), delimiter="\t"))
        if rows:
            load = rows[0].get("mean_load") or "0"
            jobs[path.relative_to(benchmarks).parts[0]].append((float(rows[0]["s"]), float(load)))
    table = [{"rule": rule, "jobs": len(runs), "total_s": sum(s for s, _ in runs), "mean_s": sum(s for s, _ in runs) / len(runs),
              "max_s": max(s for s, _ in runs), "mean_load_pct": sum(load for _, load in runs) / len(runs)}
             for rule, runs in jobs.items()]
    return sorted(table, key=lambda row: -row["total_s"])


def markdown(table: list[dict]) -> str:
    lines = ["| rule | jobs | job-seconds | mean s | max s | mean CPU load % |", "|---|---|---|---|---|---|"]
    lines += [f"| `{r['rule']}` | {r['jobs']} | {r['total_s']:.0f} | {r['mean_s']:.1f} | {r['max_s']:.1f} | {r['mean_load_pct']:.0f} |"
              for r in table]
    lines.append(f"| all | {sum(r['jobs'] for r in table)} | {sum(r['total_s'] for r in table):.0f} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", type=Path, nargs="?", default=Path("benchmarks"))
    args = parser.parse_args(argv)
    if not args.benchmarks.is_dir():
        raise SystemExit(f"{args.benchmarks}: no benchmarks directory (run the workflow first)")
    print(markdown(rule_times(args.benchmarks)))


if __name__ == "__main__":
    main()
