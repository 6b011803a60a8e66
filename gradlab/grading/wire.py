"""What a student's function returned, as JSON that the trusted grader can read without running anything.

``encode`` runs in the student's kernel and turns tensors, NumPy arrays, numbers, strings and tuples,
lists and dicts of them into plain JSON; any other object becomes an opaque stand-in that keeps its type
name. ``decode`` runs in the grader and builds the values back, refusing anything malformed: a dtype it does
not know, a shape that does not match its bytes, more than ``MAX_ELEMENTS`` numbers or ``MAX_DEPTH`` levels.
No pickle anywhere: the bytes a kernel sends are data, never code.
"""
import base64
import math
import numbers

import torch

MAX_DEPTH = 24
MAX_ELEMENTS = 20_000_000  # numbers in one record; MNIST's largest weight matrix has 100,352
MAX_STRING = 2_000

DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
)}


class Opaque:
    """Stands in the grader for an object that cannot cross as data (a function, a model, a custom class)."""

    def __init__(self, description):
        self.description = description

    def __repr__(self):
        return self.description


def _opaque_type(type_name):
    name = "".join(ch for ch in str(type_name) if ch.isalnum() or ch == "_")[:60] or "object"
    return type(name, (Opaque,), {})


class TooLarge(ValueError):
    pass


# --------------------------------------------------------------------------- kernel side
def encode(value, _depth=0, _budget=None):
    budget = _budget if _budget is not None else [MAX_ELEMENTS]
    if _depth > MAX_DEPTH:
        return {"__object__": type(value).__name__, "repr": "(nested too deeply)"}
    if value is None or isinstance(value, (bool, str)):
        return value[:MAX_STRING] if isinstance(value, str) else value
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _tensor(value, budget)}
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _float(float(value))
    if _is_ndarray(value):
        try:
            return {"__ndarray__": _tensor(torch.from_numpy(value.copy()), budget)}
        except (TypeError, ValueError):
            return _object(value)
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, _depth + 1, budget) for v in value]}
    if isinstance(value, list):
        return [encode(v, _depth + 1, budget) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k, _depth + 1, budget), encode(v, _depth + 1, budget)] for k, v in value.items()]}
    return _object(value)


def _float(x):
    return x if math.isfinite(x) else {"__float__": repr(x)}


def _is_ndarray(value):
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


def _object(value):
    try:
        text = repr(value)[:200]
    except Exception:  # a student's __repr__ may raise anything
        text = "(no repr)"
    return {"__object__": type(value).__name__, "repr": text}


def _tensor(t, budget):
    t = t.detach()
    if t.is_sparse:
        t = t.to_dense()
    info = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "device": str(t.device),
            "requires_grad": False}
    if info["dtype"] not in DTYPES:
        raise TypeError(f"a tensor of {t.dtype} cannot be sent")
    if t.device.type == "meta":
        info["data"] = None
        return info
    budget[0] -= t.numel()
    if budget[0] < 0:
        raise TooLarge(f"more than {MAX_ELEMENTS} numbers")
    # A fresh copy: contiguous() keeps an expanded one-element tensor's stride 0, which .view() refuses.
    flat = t.resolve_conj().resolve_neg().to("cpu").clone(memory_format=torch.contiguous_format).reshape(-1)
    info["data"] = base64.b64encode(flat.view(torch.uint8).numpy().tobytes()).decode("ascii")
    return info


# --------------------------------------------------------------------------- grader side
class Malformed(ValueError):
    """The record is not what a kernel running gradlab's code sends."""


def decode(data, _depth=0, _budget=None):
    budget = _budget if _budget is not None else [MAX_ELEMENTS]
    if _depth > MAX_DEPTH:
        raise Malformed("nested too deeply")
    if data is None or isinstance(data, (bool, int, float)):
        return data
    if isinstance(data, str):
        return data[:MAX_STRING]
    if isinstance(data, list):
        return [decode(v, _depth + 1, budget) for v in data]
    if not isinstance(data, dict) or len(data) > 2:
        raise Malformed(f"unexpected {type(data).__name__}")
    if "__tensor__" in data:
        return _untensor(data["__tensor__"], budget)
    if "__ndarray__" in data:
        return _untensor(data["__ndarray__"], budget).numpy()
    if "__tuple__" in data:
        return tuple(decode(_list(data["__tuple__"]), _depth + 1, budget))
    if "__dict__" in data:
        out = {}
        for pair in _list(data["__dict__"]):
            if not isinstance(pair, list) or len(pair) != 2:
                raise Malformed("a dict entry is not a pair")
            key = decode(pair[0], _depth + 1, budget)
            if not isinstance(key, (str, int, float, bool, tuple, type(None))):
                raise Malformed("a dict key is not hashable data")
            out[key] = decode(pair[1], _depth + 1, budget)
        return out
    if "__float__" in data:
        text = data["__float__"]
        if text not in ("nan", "inf", "-inf"):
            raise Malformed("not a float")
        return float(text)
    if "__object__" in data:
        return _opaque_type(data["__object__"])(f"<{str(data['__object__'])[:60]}: {str(data.get('repr', ''))[:200]}>")
    raise Malformed("unknown kind of value")


def _list(x):
    if not isinstance(x, list):
        raise Malformed("expected a list")
    return x


def _untensor(info, budget):
    if not isinstance(info, dict):
        raise Malformed("a tensor without its description")
    dtype = DTYPES.get(info.get("dtype"))
    shape = info.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise Malformed("a tensor with an unknown dtype or a bad shape")
    numel = math.prod(shape)
    budget[0] -= numel
    if budget[0] < 0:
        raise Malformed(f"more than {MAX_ELEMENTS} numbers")
    if info.get("data") is None:
        return torch.empty(shape, dtype=dtype, device="meta")
    raw = base64.b64decode(info["data"], validate=True)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(raw) != numel * itemsize:
        raise Malformed("a tensor whose bytes do not match its shape")
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape) if raw else torch.empty(shape, dtype=dtype)
    return t.to(_device(info.get("device")))


def _device(name):
    """The device the kernel had the tensor on, when this process has it too (else the CPU)."""
    if isinstance(name, str) and name.startswith("cuda") and torch.cuda.is_available():
        try:
            return torch.device(name)
        except RuntimeError:
            return torch.device("cuda")
    return torch.device("cpu")
