"""The reference gradients a hand-computed one is checked against (re-exported by ``gradlab.check``).

``autograd_grads`` asks torch autograd; ``numerical_grads`` takes central differences in float64,
the third opinion that needs no autograd at all.
"""
import torch


def autograd_grads(fn, *inputs):
    """Gradients of the scalar ``fn(*inputs)`` with respect to each input, by torch autograd.

    Works on detached copies, so the caller's tensors (and their ``.grad``) are never touched. An input
    that ``fn`` does not use gets a zero gradient, which is what the derivative is.
    """
    copies = [_input_copy(x, i).requires_grad_(True) for i, x in enumerate(inputs)]
    with torch.enable_grad():
        out = fn(*copies)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(f"fn must return a tensor with one element (a scalar), got {_describe(out)}")
        grads = torch.autograd.grad(out.reshape(()), copies, allow_unused=True)
    return tuple(torch.zeros_like(c) if g is None else g.detach() for c, g in zip(copies, grads))


def numerical_grads(fn, *inputs, eps=1e-6):
    """Central differences (f(x + eps) − f(x − eps)) / 2eps for every element, all in float64.

    The third opinion besides the hand formula and autograd. float64 matters: in float32 the
    difference of two nearly equal losses keeps only a digit or two. Even in float64 the result
    errs by about 1e-16·|f|/eps + eps²·|f‴|, roughly 1e-10 × the loss, so compare it with an
    absolute atol (1e-7 or so), not with the defaults, which follow the size of the gradient.
    Returns float64 gradients on each input's device; costs two calls of ``fn`` per element, so
    keep the inputs small.
    """
    copies = [_input_copy(x, i).to(torch.float64) for i, x in enumerate(inputs)]
    grads = []
    with torch.no_grad():
        for x in copies:
            grad = torch.zeros_like(x)
            flat_x, flat_g = x.view(-1), grad.view(-1)
            for k in range(flat_x.numel()):
                saved = float(flat_x[k])
                flat_x[k] = saved + eps
                plus = _scalar(fn(*copies))
                flat_x[k] = saved - eps
                minus = _scalar(fn(*copies))
                flat_x[k] = saved
                flat_g[k] = (plus - minus) / (2 * eps)
            grads.append(grad)
    return tuple(grads)


def _input_copy(x, i):
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise TypeError(f"input {i} is {t.dtype}: only floating-point inputs have gradients (capture others in fn)")
    return t.detach().clone(memory_format=torch.contiguous_format)  # contiguous, so .view(-1) works


def _scalar(out):
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise ValueError(f"fn must return a scalar, got {_describe(out)}")
    return float(out)


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return type(x).__name__
