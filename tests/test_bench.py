from optin.tools import bench


def test_bench_builds_a_paper_sized_bert_base_and_extrapolates_to_all_its_units(capsys):
    bench.main(["--bert-base", "--calibration-size", "2", "--units-per-layer", "1", "--skip-naive", "--threads", "1"])
    out = capsys.readouterr().out
    assert "BERT-base config" in out and "device cpu" in out
    # 12 layers x (12 heads + 3072 neurons): DESIGN's 37,008 masked forwards of exact OPTIN on BERT-base
    assert "all 37008 units (extrapolated)" in out
