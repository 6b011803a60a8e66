"""The course's data: the cell data CSVs (lessons 1-5) and MNIST (lessons 6-7, in ``mnist.py``)."""
from pathlib import Path

import pandas as pd
import torch

from .device import get_device
from .mnist import load_mnist  # noqa: F401  (re-exported: gradlab.data.load_mnist)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CELL_COLUMNS = ["mean_area", "is_cancerous"]
REGENERATE = "Regenerate it with `python data/make_cell_data.py` (needs scikit-learn)."


class DataError(RuntimeError):
    """A data file is missing or not what the course expects."""


def _read_csv(path, required):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The data file {path} does not exist. {REGENERATE}")
    try:
        frame = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path} is not a readable CSV file ({err}). {REGENERATE}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {missing}; it has {list(frame.columns)}. "
            f"The course expects {required}. {REGENERATE}"
        )
    if frame[required].isna().any().any():
        raise DataError(f"{path} has empty values in {required}. {REGENERATE}")
    return frame


def load_cell_data(path=DATA_DIR / "cell_data.csv"):
    """The 569 cell samples as a DataFrame with columns ``mean_area`` and ``is_cancerous``."""
    return _read_csv(path, CELL_COLUMNS)[CELL_COLUMNS]


def load_cell_features(path=DATA_DIR / "cell_features.csv"):
    """All 30 raw features of the 569 cell samples plus ``is_cancerous`` (not standardised)."""
    frame = _read_csv(path, ["is_cancerous"])
    if frame.shape[1] != 31:
        raise DataError(f"{path} should hold 30 features and is_cancerous, not {frame.shape[1]} columns. {REGENERATE}")
    return frame


def cell_tensors(device=None, dtype=torch.float32, frame=None):
    """X of shape (569, 1) holding mean_area and y of shape (569,) holding is_cancerous, on ``device``."""
    frame = load_cell_data() if frame is None else frame
    device = get_device() if device is None else device
    X = torch.tensor(frame[["mean_area"]].to_numpy(), dtype=dtype, device=device)
    y = torch.tensor(frame["is_cancerous"].to_numpy(), dtype=dtype, device=device)
    return X, y
