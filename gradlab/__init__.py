"""gradlab: the plumbing of the backprop-by-hand course (device, data, gradient checks, widgets)."""
from .device import get_device
from .data import cell_tensors, load_cell_data, load_cell_features, load_mnist

__all__ = ["get_device", "cell_tensors", "load_cell_data", "load_cell_features", "load_mnist"]
