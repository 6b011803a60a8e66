"""What every lesson's hidden checks share: the inputs they try and a safe call of student code."""
import torch

from gradlab.check import check_grad
from gradlab.diagnose import dtype_name


def devices():
    """The devices a hidden test runs on: always the CPU, and CUDA where the machine has it."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def cases(seed, sizes=(1, 7, 64), dtypes=(torch.float32, torch.float64)):
    """Yield (label, generator, size, dtype, device) for every combination, each with its own seed.

    The label ("n=7, float64, cpu") goes into failure messages so a student knows which case failed.
    """
    for device in devices():
        for dtype in dtypes:
            for i, n in enumerate(sizes):
                gen = torch.Generator().manual_seed(seed * 1000 + i)
                yield f"n={n}, {dtype_name(dtype)}, {device.type}", gen, n, dtype, device


def randn(gen, *shape, dtype=torch.float32, device="cpu", scale=1.0):
    """Seeded normal random numbers made on the CPU (same values on every device), then moved."""
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device)


def scalar(gen, dtype, device, scale=1.0):
    """A seeded 0-dim tensor: a parameter such as w or b."""
    return randn(gen, 1, dtype=dtype, device=device, scale=scale).reshape(())


def labels(gen, n, dtype, device):
    """Random 0/1 labels of shape (n,); both values appear whenever n > 1, so no constant label passes by luck."""
    y = (torch.rand(n, generator=gen) < 0.5).double()
    if n > 1:
        y[0], y[1] = 0.0, 1.0
    return y.to(dtype=dtype, device=device)


def neuron_batch(gen, n, dtype, device):
    """x (n,), labels y (n,) and 0-dim w, b: a fresh random one-input neuron and batch (lessons 2 and 3)."""
    x = randn(gen, n, dtype=dtype, device=device)
    y = labels(gen, n, dtype, device)
    return x, y, scalar(gen, dtype, device, scale=2.0), scalar(gen, dtype, device)


def call_student(fn, name, *args, case=""):
    """Call a student's function; turn any exception into an AssertionError that says what happened."""
    if not callable(fn):
        raise AssertionError(f"`{name}` should be a function, but it is {type(fn).__name__}. Did you overwrite it?")
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(f"`{name}` is not written yet: replace the `raise NotImplementedError` line.") from None
    except Exception as err:  # a student's bug: report it plainly instead of a deep traceback
        shapes = ", ".join(
            f"{tuple(a.shape)} {dtype_name(a.dtype)}" if isinstance(a, torch.Tensor) else type(a).__name__
            for a in args
        )
        where = f" ({case})" if case else ""
        raise AssertionError(
            f"`{name}` raised {type(err).__name__}: {err}\n  when called with: {shapes}{where}"
        ) from None


def check_tensor(name, got, expected, case, **tolerance):
    """check_grad, then insist on a tensor in the inputs' dtype and on their device (check_grad only notes those)."""
    check_grad(name, got, expected, context=case, **tolerance)
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{name} should be a tensor, but it is a {type(got).__name__} ({case}).")
    if got.dtype != expected.dtype or got.device != expected.device:
        raise AssertionError(
            f"{name} has the right values but is {dtype_name(got.dtype)} on {got.device}; it should follow the inputs: "
            f"{dtype_name(expected.dtype)} on {expected.device} ({case}). Compute it from the input tensors (torch.ones_like(x) "
            "for a new one), without float(), .item(), .cpu(), NumPy or torch.tensor(...) around a result."
        )

