"""gradlab: the plumbing of the backprop-by-hand course (device, data, gradient checks, widgets)."""
from .device import get_device
from .data import cell_tensors, load_cell_data, load_cell_features, load_mnist
from .check import Comparison, autograd_grads, check_grad, compare, numerical_grads, report

__all__ = ["get_device", "cell_tensors", "load_cell_data", "load_cell_features", "load_mnist",
           "Comparison", "autograd_grads", "check_grad", "compare", "numerical_grads", "report"]
