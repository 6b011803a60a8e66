import subprocess
import sys

import pytest
import torch

from gradlab.data import DataError, cell_tensors, load_cell_data, load_cell_features


def test_regenerating_the_csvs_reproduces_the_committed_files_byte_for_byte(repo_root, tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn (in the test extra) regenerates the cell data")
    subprocess.run([sys.executable, str(repo_root / "data" / "make_cell_data.py"), str(tmp_path)], check=True)
    for name in ("cell_data.csv", "cell_features.csv"):
        assert (tmp_path / name).read_bytes() == (repo_root / "data" / name).read_bytes(), name


def test_cell_data_matches_the_curriculum():
    frame = load_cell_data()
    assert list(frame.columns) == ["mean_area", "is_cancerous"]
    assert len(frame) == 569
    assert frame.iloc[:3].values.tolist() == [[1.001, 1], [1.326, 1], [1.203, 1]]
    assert frame["is_cancerous"].sum() == 212  # 212 malignant, 357 benign in the original data set


def test_cell_features_hold_thirty_features_and_the_label():
    frame = load_cell_features()
    assert frame.shape == (569, 31)
    assert (frame["mean_area"] / 1000).round(6).tolist() == load_cell_data()["mean_area"].round(6).tolist()


def test_cell_tensors_have_the_lesson_shapes():
    X, y = cell_tensors(torch.device("cpu"))
    assert X.shape == (569, 1) and y.shape == (569,)
    assert X.dtype == torch.float32 and y.dtype == torch.float32
    assert cell_tensors("cpu", dtype=torch.float64)[0].dtype == torch.float64


def test_missing_file_says_how_to_regenerate(tmp_path):
    with pytest.raises(DataError, match="does not exist. Regenerate it with `python data/make_cell_data.py`"):
        load_cell_data(tmp_path / "nope.csv")


def test_wrong_columns_are_named(tmp_path):
    bad = tmp_path / "cells.csv"
    bad.write_text(",area,label\n0,1.0,1\n")
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['mean_area', 'is_cancerous'\]; it has \['area', 'label'\]"):
        load_cell_data(bad)
