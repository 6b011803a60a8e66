"""Compare a gradient computed by hand with a reference, and tell the student what went wrong.

    compare(name, got, expected)       -> Comparison; never raises on anything a student passes in
    check_grad(name, got, expected)    -> the Comparison if right, else GradientError (an AssertionError) explaining why
    report([comparison, ...])          -> one table: str() gives text, a notebook shows HTML
    autograd_grads(fn, *inputs)        -> the reference: torch autograd on detached copies
    numerical_grads(fn, *inputs)       -> the third opinion: central differences in float64

A Comparison's status is one of
    "exact"  equal bit for bit once both are float64 on the CPU;
    "close"  within tolerance;
    "wrong"  comparable but outside tolerance, or in a shape that lines up with the expected one only
             after a transpose or a reshape of size-1 dimensions (those values are still compared, and
             the shape alone makes it wrong, because the next step would broadcast it wrongly);
    "error"  not comparable at all: None, a list, a string, or a shape whose values cannot be matched
             one to one with the expected ones.
Its ``kind`` names the diagnosis with a fixed label that graders may test: "none", "type", "shape",
"transposed", "nan", "zeros", "sign", "factor", "close", "values" (gradlab/diagnose.py says which
wins when several fit), or "placement" for a right answer on another device or in another dtype.
With ``computation=`` (a gradlab.variants.Exercise) and ``inputs=``, a wrong answer whose values alone say
nothing specific is also tried against the computation's usual wrong formulas (gradlab/variants.py), and the
mask hints are given only when the computation has a ReLU mask; the formula kinds are listed there
("wrong_point", "dropped", "mask_missing", "softmax_axis", ...).

Tolerance. An answer is within tolerance when every element satisfies
    |got − expected| ≤ atol + rtol · |expected|.
A given atol is absolute, as in torch.allclose. The default atol is relative to the gradient's
size: TOLERANCES' atol × scale, with scale = max |expected| (1 if all are 0), because an element of
a gradient is a sum of terms, and its rounding error follows the size of the terms, not of the sum,
which cancellation can bring near 0. Defaults follow the less precise dtype of the two. Measured
(tests/test_check_properties.py, and 300 random two-layer networks and softmax cross-entropies with
up to 784 inputs and batches of 64 at scales 1e-3 to 1e3): hand formulas and autograd differ by at
most 3e-7 × scale in float32 and 1e-15 × scale in float64. So float32 gets rtol 1e-4, atol 1e-5
(a margin of 30 or more over rounding); float64 gets 1e-7 and 1e-8, tighter but still far above
rounding, so that a formula losing digits to cancellation passes, while every real mistake (a sign,
a factor, a missing term) moves values by far more. Limits: a lone tiny value computed by
cancellation, such as σ(1 − σ) at |z| > 6 in float32, cannot be judged against its own size; pass an
absolute atol there. Central differences (numerical_grads) err by about 1e-10 × |f|, which follows
the loss, not the gradient: compare them with an absolute atol such as 1e-7.
"""
import html
import math
import numbers
from dataclasses import dataclass, field

import torch

from . import diagnose
from .reference import autograd_grads, numerical_grads  # part of this module's API

__all__ = ["Comparison", "GradientError", "Report", "TOLERANCES", "autograd_grads", "check_grad", "compare",
           "numerical_grads", "report"]

#: default (rtol, atol) per dtype; this atol is in units of max |expected| (a given atol is absolute).
TOLERANCES = {
    torch.float64: (1e-7, 1e-8),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}
SHOWN_VALUES = 6  # a student reads the message in nbgrader's feedback: a few values, never a dump

_LABELS = {
    "none": "got None", "type": "not a tensor", "shape": "wrong shape", "transposed": "transposed",
    "nan": "NaN/inf", "zeros": "all zeros", "sign": "wrong sign", "factor": "constant factor",
    "close": "close, outside tolerance", "values": "wrong values", "placement": "other device/dtype",
}


class GradientError(AssertionError):
    """A wrong gradient: the message the student reads, with the diagnosis's fixed label and the gradient's name."""

    def __init__(self, message, kind=None, gradient=None, comparison=None):
        super().__init__(message)
        self.kind = kind
        self.gradient = gradient
        self.comparison = comparison


@dataclass
class Comparison:
    """The outcome of comparing one gradient; ``str()`` is one line, ``explain()`` the full message."""

    name: str
    status: str
    max_abs_diff: float | None = None
    rel_err: float | None = None
    diagnosis: str | None = None
    kind: str | None = None  # a short fixed label for the diagnosis ("sign", "factor", ...)
    index: tuple | None = None  # where the largest difference is, in the expected shape
    details: list = field(default_factory=list, repr=False)  # the lines under the first line of explain()

    @property
    def ok(self):
        return self.status in ("exact", "close")

    def __str__(self):
        return self.line(width=16)

    def line(self, width):
        """One line like backprop-ninja's ``cmp``: name (padded to ``width``), status, largest difference."""
        diff = "" if self.max_abs_diff is None else f" | max diff {self.max_abs_diff:.2e} | rel {self.rel_err:.1e}"
        label = f" | {_LABELS.get(self.kind, self.kind)}" if self.kind else ""
        return f"{self.name:<{width}} {self.status:<5}{diff}{label}"

    def explain(self, context=None):
        """The student-facing explanation: a few short lines."""
        where = f" ({context})" if context else ""
        if self.ok:
            head = f"{self.name} is right{where}" + (f": {self.diagnosis}" if self.diagnosis else ".")
        else:
            verdict = "could not be checked" if self.status == "error" else "is wrong"
            head = f"{self.name} {verdict}{where}: {self.diagnosis}"
        return "\n".join([head, *("  " + line for line in self.details)])

    def _repr_html_(self):
        return report([self])._repr_html_()


class Report:
    """Many comparisons as one table: ``str()`` for text, ``_repr_html_`` for a notebook."""

    def __init__(self, comparisons):
        self.comparisons = list(comparisons)

    @property
    def ok(self):
        return all(c.ok for c in self.comparisons)

    def __str__(self):
        width = max((len(c.name) for c in self.comparisons), default=0)
        return "\n".join(c.line(width) for c in self.comparisons)

    # A console or a notebook's text/plain output shows the table too, not <Report at 0x...>.
    __repr__ = __str__

    def _repr_html_(self):
        rows = []
        for c in self.comparisons:
            color = "#1a7f37" if c.ok else "#cf222e"
            diff = "" if c.max_abs_diff is None else f"{c.max_abs_diff:.2e}"
            rel = "" if c.rel_err is None else f"{c.rel_err:.1e}"
            cells = [
                f'<b style="color:{color}">{"✓" if c.ok else "✗"}</b> {html.escape(c.name)}',
                html.escape(c.status), diff, rel, html.escape(c.diagnosis or ""),
            ]
            rows.append("<tr>" + "".join(f'<td style="text-align:left">{x}</td>' for x in cells) + "</tr>")
        head = "".join(f'<th style="text-align:left">{h}</th>' for h in ("gradient", "status", "max |diff|", "rel", "why"))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def report(comparisons):
    """One table for many comparisons (HTML in a notebook, text with ``print``)."""
    return Report(comparisons)


def compare(name, got, expected, *, atol=None, rtol=None, computation=None, inputs=None, derivative=True, batch=None):
    """Compare a student's ``got`` with the reference ``expected``; never raises on ``got``.

    ``expected`` is the grader's own tensor: a broken one raises TypeError, because blaming the student
    for it would be wrong. NumPy arrays and Python numbers are accepted for both.
    computation, inputs: the Exercise (gradlab.variants) this gradient belongs to and the inputs of this case;
    then a vague "values differ" is replaced by a usual formula mistake where one fits this case.
    derivative: False when the values are not a gradient (a loss, an output, a parameter after a step): the
    diagnosis then speaks neither of derivatives nor of the chain rule.
    batch: the batch size N of this case, False when the exercise has none, None (unknown): a constant factor k is
    called a missing 1/N only where k can be N (gradlab/diagnose.py).
    """
    result = _compare(name, got, expected, atol, rtol, derivative, batch)
    if computation is not None and not result.ok:
        result = _with_computation(result, name, got, computation, inputs)
    return result


def _compare(name, got, expected, atol, rtol, derivative=True, batch=None):
    exp = _reference(expected)
    expected_line = "expected: " + _summary(exp)
    try:
        got_t = _student_tensor(got)
        return _compare_tensors(name, got_t, exp, atol, rtol, expected_line, is_tensor=not isinstance(got, numbers.Number),
                                derivative=derivative, batch=batch)
    except _Unreadable as why:
        kind, sentence = why.args
        return Comparison(name, "error", diagnosis=sentence, kind=kind, details=[expected_line])
    except Exception as err:  # e.g. an int too big for a float, an array-like that fails to convert: say so
        return Comparison(name, "error", diagnosis=f"could not read it as numbers ({type(err).__name__}: {err}).",
                          kind="type", details=[expected_line])


def check_grad(name, got, expected, *, atol=None, rtol=None, context=None, computation=None, inputs=None,
               derivative=True, batch=None):
    """Return the Comparison if ``got`` is right; otherwise raise GradientError (an AssertionError with the
    diagnosis's ``kind``) explaining the mistake."""
    result = compare(name, got, expected, atol=atol, rtol=rtol, computation=computation, inputs=inputs,
                     derivative=derivative, batch=batch)
    if not result.ok:
        raise GradientError(result.explain(context), kind=result.kind, gradient=name, comparison=result)
    return result


def factor_by_case(cases):
    """The sentence for a gradient that is a constant multiple of the expected one in every wrong case, but not the
    same multiple in all of them (the one case's message would name one constant that is not the mistake).

    cases: [(got, expected, n)] of one gradient, n the case's batch size N. None where one case's message is right:
    a wrong case that is no such multiple, one multiple in every case, or N in every case (a missing 1/N, named
    case by case). A multiple of N/2 in every case is both factors of 2/N missing; any other is said to differ,
    naming none (and only when every wrong case has two values or more: one value is a multiple of anything).
    """
    found = []
    for got, expected, n in cases:
        if compare("", got, expected).ok:
            continue
        factor = _constant_factor(got, expected)
        if factor is None:
            return None
        found.append((n, *factor))
    if not found:
        return None

    def near(a, b):
        return abs(a - b) <= 1e-3 * abs(b)

    if all(near(r, found[0][1]) for _, r, _ in found) or all(near(r, n) for n, r, _ in found):
        return None
    shown = ", ".join(dict.fromkeys(f"N = {n}: {diagnose.ratio_name(r)}" for n, r, _ in found))
    if all(near(r, n / 2) for n, r, _ in found):
        return (f"it is N/2 × the expected one in every case ({shown}): both factors of 2/N are missing, the 2 (the "
                "derivative of a square) and the 1/N (of the mean).")
    if all(informative >= 2 for _, _, informative in found):
        return (f"every value is a constant multiple of the expected one, but the multiple differs between the cases "
                f"({shown}), so no one constant is missing. Check each factor of the chain rule, including those "
                "that depend on N.")
    return None


def _constant_factor(got, expected):
    """(r, the number of values that are not negligible) when got = r · expected to compare's tolerance, else None."""
    try:
        g, e = _student_tensor(got), _reference(expected)
    except Exception:  # not readable as numbers: the case's own message says why
        return None
    if g.shape != e.shape or e.numel() == 0:
        return None
    rtol, atol = _tolerance(g.dtype, e.dtype, None, None, diagnose.scale_of(_cpu64(e)))
    g, e = _cpu64(g), _cpu64(e)
    if not (bool(torch.isfinite(g).all()) and bool(torch.isfinite(e).all())):
        return None
    r = diagnose.ratio(g, e, lambda candidate: diagnose.within(candidate, e, rtol, atol))
    return None if r is None else (r, int((e.abs() > atol).sum()))


def _with_computation(result, name, got, computation, inputs):
    """A vague or mask-worded diagnosis, revisited with the computation's usual wrong formulas (one case)."""
    from . import variants  # imported here: variants builds on this module

    if result.status == "error" or result.kind not in ("values", "close"):
        return result
    if len(computation.names) > 1 and name in computation.names:
        computation = computation.only(name)
    found = computation.diagnose([computation.compare_case("", inputs, got)])
    if found.named:
        result.kind, result.diagnosis = found.kind, found.sentence
    else:
        result.diagnosis = variants._scoped(result, computation.graph)
    return result


def _compare_tensors(name, got, exp, atol, rtol, expected_line, is_tensor, derivative=True, batch=None):
    notes = diagnose.placement_notes(got, exp) if is_tensor else []
    g, e = _cpu64(got), _cpu64(exp)
    details = [expected_line, "got:      " + _summary(got)]
    lined, shape_kind, shape_sentence = diagnose.line_up(g, e)
    if lined is None:
        return Comparison(name, "error", diagnosis=shape_sentence, kind=shape_kind, details=details)
    if e.numel() == 0:
        status = "exact" if shape_kind is None else "wrong"
        return Comparison(name, status, 0.0, 0.0, shape_sentence, shape_kind, details=details)

    scale = diagnose.scale_of(e)
    rtol, atol = _tolerance(got.dtype, exp.dtype, rtol, atol, scale)
    diff = _abs_diff(lined, e)
    allowed = torch.where(torch.isfinite(e), atol + rtol * e.abs(), torch.zeros_like(e))
    max_diff, index, line = _largest_difference(diff, lined, e, allowed)
    details.append(line + ("" if shape_kind is None else ", once lined up"))
    within = bool((diff <= allowed).all())
    note = "; ".join(notes) + "." if notes else None

    if within and shape_kind is None:
        status = "exact" if torch.equal(lined, e) else "close"
        return Comparison(name, status, max_diff, max_diff / scale, note, note and "placement", index, details)
    if within:
        kind, sentence = shape_kind, shape_sentence
    else:
        kind, sentence = diagnose.wrong_values(lined, e, rtol, atol, derivative=derivative, batch=batch)
        if shape_kind is not None:
            kind, sentence = shape_kind, f"{shape_sentence} Even lined up that way, {sentence}"
        if note:
            sentence += " Also, " + note
    return Comparison(name, "wrong", max_diff, max_diff / scale, sentence, kind, index, details)


def _largest_difference(diff, got, expected, allowed):
    """(largest |difference|, its index, a line saying where it is and what was allowed there)."""
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape))
    e_at, g_at = expected.flatten()[flat], got.flatten()[flat]
    digits = diagnose.digits_to_tell_apart(e_at, g_at)
    at = f" at index {index}" if index else ""
    max_diff = float(diff.flatten()[flat])
    return max_diff, index, (
        f"largest difference: {max_diff:.3g}{at} (expected {diagnose.num(e_at, digits)}, "
        f"got {diagnose.num(g_at, digits)}); allowed there {float(allowed.flatten()[flat]):.1g}"
    )


# --------------------------------------------------------------------------- reading answers
class _Unreadable(Exception):
    """Raised with (kind, sentence) when a student's answer is not a tensor or a number."""


def _student_tensor(x):
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, numbers.Real) and not isinstance(x, bool):
        t = torch.tensor(float(x), dtype=torch.float64)
    elif hasattr(x, "__array__") and not isinstance(x, (list, tuple, str)):
        t = _from_numpy(x)
    else:
        raise _Unreadable(*diagnose.not_a_tensor(x))
    if t.is_sparse:
        t = t.to_dense()
    if t.is_complex():
        raise _Unreadable("type", f"got complex numbers ({t.dtype}); a gradient of a real loss is real.")
    if t.device.type == "meta":
        raise _Unreadable("type", "got a tensor on the 'meta' device, which holds no values.")
    return t


def _from_numpy(x):
    import numpy as np  # only when a NumPy value arrives

    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise _Unreadable("type", f"got a NumPy array of {arr.dtype}, not of numbers.")
    return torch.from_numpy(np.array(arr, copy=True))


def _reference(expected):
    try:
        return _student_tensor(expected)
    except _Unreadable as why:
        raise TypeError(f"the expected gradient is unusable: {why.args[1]}") from None


def _tolerance(got_dtype, exp_dtype, rtol, atol, scale):
    """(rtol, absolute atol): given ones win; otherwise the defaults of the less precise floating dtype."""
    floats = [d for d in (got_dtype, exp_dtype) if d.is_floating_point]
    if floats:
        coarsest = max(floats, key=lambda d: torch.finfo(d).eps)
        default = TOLERANCES.get(coarsest, TOLERANCES[torch.float32])
    else:
        default = (0.0, 0.0)  # integers compare exactly
    return (default[0] if rtol is None else rtol), (default[1] * scale if atol is None else atol)


def _cpu64(t):
    return t.to(device="cpu", dtype=torch.float64)


def _abs_diff(got, expected):
    """|got − expected|, with matching NaN/inf in both counted as equal and any other NaN as inf."""
    diff = (got - expected).abs()
    same = ~torch.isfinite(expected) & ((got == expected) | (got.isnan() & expected.isnan()))
    return torch.nan_to_num(torch.where(same, torch.zeros_like(diff), diff), nan=math.inf, posinf=math.inf)


def _summary(t):
    """'shape (3, 4) float32 on cpu: [0.1, -2, …, (12 values)]', showing at most SHOWN_VALUES values."""
    flat = t.detach().flatten()
    shown = ", ".join(diagnose.num(v) for v in flat[:SHOWN_VALUES].to("cpu", torch.float64).tolist())
    more = f", … ({flat.numel()} values)" if flat.numel() > SHOWN_VALUES else ""
    dtype = diagnose.dtype_name(t.dtype)
    return f"shape {tuple(t.shape)} {dtype} on {t.device}: [{shown}{more}]"
