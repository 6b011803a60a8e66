"""Regenerate the cell data CSVs from scikit-learn's bundled copy of the Wisconsin
diagnostic breast cancer data set (569 samples; Street, Wolberg & Mangasarian, 1993).

    python data/make_cell_data.py            # writes next to this file
    python data/make_cell_data.py OUT_DIR    # writes elsewhere (the tests compare the two)

cell_data.csv      index, mean_area (the data set's "mean area" / 1000), is_cancerous (1 = malignant)
cell_features.csv  index, the 30 raw features (column names with spaces as underscores), is_cancerous
"""
import sys
from pathlib import Path

from sklearn.datasets import load_breast_cancer


def build_frames():
    bunch = load_breast_cancer(as_frame=True)
    features = bunch.frame.drop(columns="target")
    features.columns = [name.replace(" ", "_") for name in features.columns]
    # scikit-learn labels malignant as 0; the course asks "is it cancerous?", so flip it.
    is_cancerous = 1 - bunch.frame["target"]

    cells = features[["mean_area"]].copy() / 1000
    cells["is_cancerous"] = is_cancerous
    features = features.copy()
    features["is_cancerous"] = is_cancerous
    return cells, features


def write(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, features = build_frames()
    cells.to_csv(out_dir / "cell_data.csv", float_format="%.6g", lineterminator="\n")
    features.to_csv(out_dir / "cell_features.csv", float_format="%.6g", lineterminator="\n")
    return out_dir / "cell_data.csv", out_dir / "cell_features.csv"


if __name__ == "__main__":
    for path in write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent):
        print("wrote", path)
