import pandas as pd
import pytest

from optin.data.text import draw_calibration, make_split, read_local_csv


def test_split_is_seeded_disjoint_and_pool_is_in_train():
    a = make_split(100, 60, 30, 16, seed=4)
    assert a == make_split(100, 60, 30, 16, seed=4)
    assert a != make_split(100, 60, 30, 16, seed=5)
    assert not set(a["train"]) & set(a["test"])
    assert set(a["calib_pool"]) <= set(a["train"])
    assert (len(a["train"]), len(a["test"]), len(a["calib_pool"])) == (60, 30, 16)


def test_split_larger_than_dataset_is_rejected():
    with pytest.raises(ValueError, match="dataset has 50"):
        make_split(50, 40, 20, 8, seed=0)


def test_calibration_draws_are_disjoint_and_seeded():
    pool = pd.DataFrame({"text": list("abcdefghij"), "label": [0, 1] * 5})
    first, second = draw_calibration(pool, 4, seed=1, draws=2)
    assert not set(first) & set(second)
    assert draw_calibration(pool, 4, seed=1, draws=2) == [first, second]
    with pytest.raises(ValueError, match="calibration size"):
        draw_calibration(pool, 0, seed=1, draws=1)
    with pytest.raises(ValueError, match="pool has 10"):
        draw_calibration(pool, 6, seed=1, draws=2)


def test_missing_dataset_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_local_csv(tmp_path / "nowhere.csv")
