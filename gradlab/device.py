"""Which device the lessons run on: CUDA when there is one, else the CPU.

Set ``GRADLAB_DEVICE=cpu`` (or ``cuda``, ``cuda:1``) to override the automatic choice.
"""
import os

import torch

ENV_VAR = "GRADLAB_DEVICE"


class DeviceError(RuntimeError):
    """The requested device cannot be used on this machine."""


def get_device(name=None):
    """Return the ``torch.device`` the course should use.

    ``name`` wins over the ``GRADLAB_DEVICE`` environment variable, which wins over the automatic
    choice (CUDA when available, else CPU).
    """
    requested = name if name is not None else os.environ.get(ENV_VAR, "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = "get_device()" if name is not None else f"{ENV_VAR}={requested!r}"
    kind = requested.lower().split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise DeviceError(
            f"{source} names an unknown device. Use 'cpu' or 'cuda' (optionally 'cuda:N'), "
            f"or unset {ENV_VAR} to let the course choose."
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"{source} asks for CUDA, but this PyTorch ({torch.__version__}) sees no CUDA GPU. "
            f"Use {ENV_VAR}=cpu, or unset it: the lessons run on the CPU too."
        )
    try:
        device = torch.device(requested.lower())
    except RuntimeError as err:
        raise DeviceError(f"{source} is not a valid device name ({err}). Use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"{source} asks for GPU {device.index}, but only {torch.cuda.device_count()} "
            f"GPU(s) are visible. Use 'cuda' or 'cuda:0'."
        )
    return device
