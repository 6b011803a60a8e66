import pytest
import torch

from gradlab.device import DeviceError, get_device


def test_automatic_choice_follows_cuda_availability(monkeypatch):
    monkeypatch.delenv("GRADLAB_DEVICE", raising=False)
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "CPU")
    assert get_device() == torch.device("cpu")


def test_argument_wins_over_environment(monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "nonsense")
    assert get_device("cpu") == torch.device("cpu")


def test_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="GRADLAB_DEVICE='tpu' names an unknown device. Use 'cpu' or 'cuda'"):
        get_device()


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("GRADLAB_DEVICE", "cuda")
    with pytest.raises(DeviceError, match="asks for CUDA, but this PyTorch .* sees no CUDA GPU. Use GRADLAB_DEVICE=cpu"):
        get_device()


def test_missing_gpu_index_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match="asks for GPU 3, but only 1 GPU"):
        get_device("cuda:3")
