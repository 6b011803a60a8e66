"""Notice autograd inside a student's function that an exercise asks to be derived by hand.

``no_autograd()`` is a context manager; whatever runs inside it that records an autograd graph, asks for
gradients, or marks a tensor as requiring them is stopped with ``AutogradUsed`` (a BaseException, so a
student's ``except Exception`` does not hide it), and the first such use is kept in ``guard.reason``
even when the student's code catches the exception anyway.

Three nets, because none alone sees everything:
- a saved-tensors pack hook: every operation that records a graph saves tensors for backward, whatever
  API started it (``requires_grad=True``, ``nn.Parameter``, a saved reference to ``autograd.grad``);
- a torch-function mode: the explicit calls (``.backward()``, ``torch.autograd.grad``, ``requires_grad_``,
  ``requires_grad=True``), including graphs whose operations save nothing (a plain sum), and forward-mode
  autograd (``make_dual``, which ``torch.autograd.forward_ad`` and ``torch.func.jvp``/``jacfwd`` go through);
- a dispatch mode: PyTorch's own backward kernels called directly (``torch.ops.aten.sigmoid_backward``),
  which compute a layer's gradient without any graph, and complex tensors: no exercise needs them, and the
  complex-step trick (Im f(w + ih) / h) gives a derivative exact to rounding without deriving anything.

Code in the same process can switch both off on purpose (``torch._C`` internals); the instructor's
static scan of the submission (gradlab.instructor.scan) flags such code instead.
"""
import _thread
import os
import subprocess
import threading
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_GRADIENT_CALLS = {
    torch.Tensor.backward: ".backward()",
    torch.autograd.grad: "torch.autograd.grad(...)",
    torch.autograd.backward: "torch.autograd.backward(...)",
}


# A reason that is a numerical derivative, not autograd: the student's message words it so (common._conclude).
COMPLEX_STEP = "complex numbers (the complex-step trick computes a derivative numerically)"
# The start of a reason that is a refused library function (``no_autograd(refused=...)``).
LIBRARY = "torch's own "


class AutogradUsed(BaseException):
    """Raised inside the student's function at the first use of autograd."""


class Guard:
    def __init__(self, refused=None):
        self.reason = None
        self.refused = refused or {}  # {aten op name: what it is}: library functions an exercise asks to write
        self.suspended = 0  # > 0 while the grader's own reference code runs inside the student's call

    def stop(self, reason):
        if self.suspended:
            return
        if self.reason is None:
            self.reason = reason
        raise AutogradUsed(f"not allowed here: {reason}")


class _ExplicitCalls(TorchFunctionMode):
    def __init__(self, guard):
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GRADIENT_CALLS:
            self.guard.stop(_GRADIENT_CALLS[func])
        name = getattr(func, "__name__", "")
        if name == "_make_dual":
            self.guard.stop("forward-mode autograd (make_dual: torch.autograd.forward_ad, torch.func.jvp or jacfwd)")
        if name == "requires_grad_" and (args[1] if len(args) > 1 else kwargs.get("requires_grad", True)):
            self.guard.stop(".requires_grad_()")
        if name == "__set__" and len(args) > 1 and args[1] is True:  # tensor.requires_grad = True
            self.guard.stop(".requires_grad = True")
        if kwargs.get("requires_grad") is True:
            self.guard.stop(f"requires_grad=True in {name or 'a tensor factory'}")
        return func(*args, **kwargs)


class _BackwardKernels(TorchDispatchMode):
    def __init__(self, guard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        op = name.split(".")[0]
        if "_backward" in op:  # also _softmax_backward_data and the like
            self.guard.stop(f"PyTorch's own backward kernel ({name.replace('::', '.')})")
        if op in self.guard.refused:
            self.guard.stop(self.guard.refused[op])
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.is_complex() for t in (out if isinstance(out, (tuple, list)) else (out,))):
            self.guard.stop(COMPLEX_STEP)
        return out


@contextmanager
def no_autograd(refused=None):
    """Run a block in which any autograd use is stopped; yields the Guard (``.reason`` says what was used).

    refused: {aten op name ("aten::sigmoid"): what calling it means}, library functions stopped as well: an
    exercise that asks to write σ is not answered by torch.sigmoid (the reason then starts with LIBRARY).

    The nets are per thread in torch, so a thread started inside the block runs under the same guard (autograd
    there is seen and named, whatever the thread returns), and a new process is refused (_processes_refused)."""
    guard = Guard(refused)
    _active.append(guard)
    try:
        with _threads_guarded(guard), _processes_refused(guard), _watching(guard):
            yield guard
    finally:
        _active.pop()


@contextmanager
def _watching(guard):
    def pack(tensor):
        guard.stop("an autograd graph was recorded (an operation on a tensor that requires grad)")
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved), _ExplicitCalls(guard), \
            _BackwardKernels(guard):
        yield


@contextmanager
def _threads_guarded(guard):
    """threading.Thread.start and _thread.start_new_thread run the new thread's code under ``guard``."""
    def guarded(fn):
        def run(*args, **kwargs):
            with _watching(guard):
                return fn(*args, **kwargs)
        return run

    def start(thread):
        thread.run = guarded(thread.run)
        return original_start(thread)

    def start_new_thread(fn, args, kwargs=None):
        return original_new_thread(guarded(fn), args, kwargs or {})

    original_start, original_new_thread = threading.Thread.start, _thread.start_new_thread
    threading.Thread.start, _thread.start_new_thread = start, start_new_thread
    try:
        yield
    finally:
        threading.Thread.start, _thread.start_new_thread = original_start, original_new_thread


@contextmanager
def _processes_refused(guard):
    """A process started inside a guarded call could run autograd unseen: os.fork, posix_spawn, os.system and every
    subprocess (multiprocessing goes through them) stop the call. Patched for the call only: an audit hook, which
    could not be removed, costs a Python call on every audited event (torch's modes call id() at every operation:
    lesson 7's checks ran 75 % slower with one)."""
    def refusing(name, original):
        def start(*args, **kwargs):
            guard.stop(f"a new process ({name}), where autograd would go unseen")
            return original(*args, **kwargs)
        return start

    saved = [(owner, name, getattr(owner, name)) for owner, name in _PROCESS_STARTS if hasattr(owner, name)]
    for owner, name, original in saved:
        setattr(owner, name, refusing(f"{getattr(owner, '__name__', 'subprocess.Popen')}.{name}", original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


_PROCESS_STARTS = [(os, "fork"), (os, "forkpty"), (os, "posix_spawn"), (os, "posix_spawnp"), (os, "system"),
                   (subprocess.Popen, "_execute_child")]


_active = []


@contextmanager
def suspended():
    """Let the grader's own reference code (autograd inside) run within a guarded student call."""
    guard = _active[-1] if _active else None
    if guard is not None:
        guard.suspended += 1
    try:
        yield
    finally:
        if guard is not None:
            guard.suspended -= 1


def autograd_in_error(err):
    """The autograd API named by an error that torch raised because of the guard (torch.func refuses hooks)."""
    if isinstance(err, RuntimeError) and "saved tensor hooks" in str(err):
        return "torch.func (grad, vjp, jacrev, ...)"
    return None
