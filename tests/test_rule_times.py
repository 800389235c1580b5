"""The per-rule time table (`make rule-times`) against hand-summed benchmark files."""


def test_rule_times_sum_the_benchmark_files(tmp_path):
    from optin.tools.rule_times import markdown, rule_times

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, seconds, load in (("solve/a/budget0.400.tsv", 0.5, 0.0), ("solve/a/budget0.600.tsv", 1.5, 0.0),
                               ("evaluate/a/budget0.400.tsv", 12.0, 150.0)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(header + f"{seconds}\t0:00:01\t1\t1\t1\t1\t0\t0\t{load}\t1\n")
    table = rule_times(tmp_path)
    assert [(r["rule"], r["jobs"], r["total_s"], r["max_s"]) for r in table] == [("evaluate", 1, 12.0, 12.0), ("solve", 2, 2.0, 1.5)]
    assert markdown(table).splitlines()[-1] == "| all | 3 | 14 | | | |"
