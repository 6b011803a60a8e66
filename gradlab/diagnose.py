"""Recognise the usual mistakes in a hand-computed gradient and name them in plain words.

``gradlab.check`` decides *whether* an answer is right; this module says *why* it is not. Each
function returns ``(kind, sentence)``: ``kind`` is a short fixed label that tests and tables use
("sign", "factor", "transposed", ...), ``sentence`` is what the student reads.

The rules run in a fixed order and the first that fits wins, because the cases overlap:
- NaN or inf where the expected value is finite beats everything: nothing else can be judged.
- All zeros is "zeros", not "a factor 0". If the *expected* values are all 0, no ratio exists,
  and the answer is simply "expected every value to be 0".
- A square matrix that is the transpose of the expected one is "transposed", tried before the sign
  (an antisymmetric matrix fits both; the transpose is the likelier slip).
- A ratio of −1 is a wrong sign, not a factor; −k is a factor k with the sign also named.
- One constant ratio r between all values (least squares, then checked value by value at the
  tolerance scaled by |r|) is a factor. 2 and ½ get the factor-2 wording (2 could also be N = 2);
  an integer k ≥ 3 is "did you forget to divide by N (N = k here)?", 1/k an extra division, unless
  the caller says what N is (``batch``): then only k = N is worded so, and with ``batch=False`` (the
  exercise has no batch) never. A ratio within 0.1 % of 1 is "close", not a factor.
- ``derivative=False`` says the values are not a gradient (a loss, a layer's output, a parameter after a
  step): no wording then speaks of derivatives or the chain rule.
- With a single value that is not negligible, every ratio is "consistent": only a recognisable one
  (±k or ±1/k within 0.001 %, what rounding leaves of a real factor) is named, as "it is ..." rather than
  "every value is ...".
- Device and dtype differences are notes: they explain an answer but never fail it on their own.
"""
import math

import torch

# A ratio that is this close (relatively) to an integer k or to 1/k is named "k" or "1/k".
NICE_RATIO = 1e-3
# For a lone value the ratio proves nothing by its shape, so it must be that close to k or 1/k: a real factor
# (a missing 1/N, a 2) is exact to rounding, while 188.1 is not "188" (a window of ±0.19 would catch it). The window
# is also capped in absolute terms, SINGLE_NICE_ABS, because any large number is within k·1e-5 of an integer by
# chance (37911.2 is not "N = 37911"); a random ratio lands in a window of ±0.001 one time in 500.
SINGLE_NICE_RATIO = 1e-5
SINGLE_NICE_ABS = 1e-3
# Outside tolerance but within this (relative to the scale), or 100 × the tolerance, is "close".
CLOSE = 1e-3
SIGN = "every value has the wrong sign. Check the sign of each term (for example y − ŷ versus ŷ − y)."


def within(got, expected, rtol, atol):
    """Elementwise |got − expected| ≤ atol + rtol·|expected| (float64 CPU tensors, same shape)."""
    return bool(((got - expected).abs() <= atol + rtol * expected.abs()).all())


def num(x, digits=4):
    return f"{float(x):.{digits}g}"


def digits_to_tell_apart(a, b):
    """Significant digits that show a and b as different numbers (4 to 17)."""
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)) or a == b:
        return 4
    return min(17, max(4, 2 + math.ceil(math.log10(max(abs(a), abs(b)) / abs(a - b)))))


def shape_str(shape):
    return str(tuple(shape))


# --------------------------------------------------------------------------- not a tensor at all
def not_a_tensor(x):
    """Why ``x`` cannot be read as a tensor: ``(kind, sentence)``."""
    if x is None:
        return "none", "got None: the function returned nothing. Is a `return` missing, or is the stub still there?"
    if isinstance(x, bool):
        return "type", f"got {x}, a bool: a gradient is a tensor of numbers."
    if isinstance(x, (list, tuple)):
        what = type(x).__name__
        if x and all(isinstance(v, torch.Tensor) for v in x):
            return "type", (
                f"got a {what} of {len(x)} tensors, not one tensor. If these are several gradients, "
                "return (or unpack) the one asked for; if they are pieces of one, join them with torch.stack(...)."
            )
        return "type", f"got a {what} of {len(x)} items, not a tensor: build one with torch.tensor(...)."
    if isinstance(x, str):
        return "type", f"got the string {x[:40]!r}, not a tensor."
    return "type", f"got a {type(x).__name__}, not a tensor or a number."


# --------------------------------------------------------------------------- shapes
def line_up(got, expected):
    """Put ``got`` into ``expected``'s shape when its values can be matched one to one.

    Returns ``(got_lined_up or None, kind, sentence)``; ``kind`` is None when the shapes agree.
    A transposed matrix and a shape that differs only in size-1 dimensions (the (N,) vs (N, 1) trap)
    can be lined up, so their values are still compared; any other shape cannot.
    """
    g_shape, e_shape = tuple(got.shape), tuple(expected.shape)
    if g_shape == e_shape:
        return got, None, None
    said = f"shape {shape_str(g_shape)} but expected {shape_str(e_shape)}"
    if got.dim() == 2 and expected.dim() == 2 and g_shape == e_shape[::-1]:
        return got.T, "transposed", f"{said}, its transpose. Check the order in your matrix product, or use .T."
    if got.numel() == expected.numel() and _squeezed(g_shape) == _squeezed(e_shape):
        return got.reshape(e_shape), "shape", (
            f"{said}. The numbers line up, but the shape does not: mixing (N,) and (N, 1) makes "
            "broadcasting build an (N, N) matrix in the next step. Use .reshape(...) or keepdim=True to match."
        )
    return None, "shape", f"{said}. {_shape_hint(got, expected)}".rstrip()


def _squeezed(shape):
    return tuple(s for s in shape if s != 1)


def _shape_hint(got, expected):
    g_shape, e_shape = tuple(got.shape), tuple(expected.shape)
    vector = _squeezed(e_shape)
    if len(vector) == 1 and g_shape == (vector[0], vector[0]) and vector[0] > 1:
        return (
            "A square matrix where a vector was expected is the broadcasting trap: a (N,) tensor "
            "combined with a (N, 1) tensor broadcasts to (N, N). Make both the same shape first."
        )
    if got.numel() == 1 and expected.numel() > 1:
        return "A single number where a tensor was expected: did a .sum() or .mean() run over every dimension?"
    if g_shape[1:] == e_shape and got.dim() > expected.dim():
        hint = f"There is an extra first dimension of size {g_shape[0]} (one row per example?)"
        if within(got.sum(dim=0), expected, 1e-6, 1e-6 * scale_of(expected)):
            return hint + ": summing it over dim=0 gives the expected values."
        return hint + ": should it be summed over the batch, .sum(dim=0)?"
    if got.numel() == expected.numel():
        return "It has the right number of values: did a .view or .reshape use the wrong shape?"
    if g_shape == e_shape[1:]:
        return f"The first dimension (size {e_shape[0]}) is missing: was it summed or averaged away?"
    return ""


def scale_of(expected):
    """The magnitude tolerances are measured against: the largest finite |expected|, or 1 if that is 0."""
    finite = expected[torch.isfinite(expected)].abs()
    biggest = float(finite.max()) if finite.numel() else 0.0
    return biggest if biggest > 0 else 1.0


# --------------------------------------------------------------------------- values
def wrong_values(got, expected, rtol, atol, *, derivative=True, batch=None):
    """Name the mistake in ``got`` (same shape as ``expected``, float64 CPU, not within rtol and absolute atol).

    derivative: whether the values are a gradient (False: a value such as a loss or an output).
    batch: the exercise's batch size N, False when it has none, None when unknown (a factor k may then be N)."""
    scale = scale_of(expected)

    def fits(candidate):
        return within(candidate, expected, rtol, atol)

    finite = torch.isfinite(expected)
    bad = finite & ~torch.isfinite(got)
    if bad.any():
        return "nan", _nonfinite(got, bad)
    if bool((got == 0).all()) and bool((expected != 0).any()):
        if not derivative:
            return "zeros", "every value is 0. Is the result never written into (a fresh torch.zeros that stays empty)?"
        return "zeros", (
            "every value is 0. Is the gradient never written into (a fresh torch.zeros that stays "
            "empty), or is the upstream gradient multiplied in as 0?"
        )
    if bool((expected[finite] == 0).all()):
        if not derivative:
            return "values", "expected every value to be 0 here, but yours are not."
        return "values", "expected every value to be 0 here (this input does not affect the output), but yours are not."
    if got.dim() == 2 and got.shape[0] == got.shape[1] > 1 and fits(got.T):
        return "transposed", "it is the transpose of the expected matrix. Check the order in your matrix product, or use .T."
    if fits(-got):
        return "sign", SIGN
    factor = _factor(got, expected, fits, atol, derivative, batch)
    if factor is not None:
        return factor
    if within(got, expected, max(100 * rtol, CLOSE), max(100 * atol, CLOSE * scale)):
        return "close", _close(got, expected, rtol, atol, scale)
    return "values", _partly_wrong(got, expected, rtol, atol, derivative)


def _nonfinite(got, bad):
    count, total = int(bad.sum()), bad.numel()
    first = tuple(int(i) for i in bad.nonzero()[0])
    kinds = " and ".join(w for w, m in (("NaN", got.isnan()), ("inf", got.isinf())) if bool((m & bad).any()))
    return (
        f"{count} of {total} values are {kinds} (the first at index {first}). NaN comes from 0/0, log of 0 "
        "or a negative number, or inf − inf; inf from dividing by 0 or exp of a large number."
    )


def ratio(got, expected, fits):
    """The one constant r with got = r · expected (the least-squares ratio, then ``fits(got / r)`` value by value),
    or None when there is no such r."""
    scale = scale_of(expected)
    g, e = got / scale, expected / scale  # so that the sums below neither overflow nor underflow
    r = float((g * e).sum() / (e * e).sum())
    if r == 0 or not math.isfinite(r) or not fits(got / r):
        return None
    return r


def ratio_name(r):
    """r as a message shows a factor: ½, 1/64, 7, −2, or its digits when it is none of those."""
    name, _ = _name_ratio(abs(r))
    return ("−" if r < 0 else "") + name if name not in (None, "1") else num(r)


def _factor(got, expected, fits, negligible, derivative=True, batch=None):
    """``(kind, sentence)`` for got = r · expected with one constant r, or None when there is no such r."""
    r = ratio(got, expected, fits)
    if r is None:
        return None
    informative = int((expected.abs() > negligible).sum())
    name, hint = (_name_ratio(abs(r), NICE_RATIO, derivative=derivative, batch=batch) if informative >= 2 else
                  _name_ratio(abs(r), SINGLE_NICE_RATIO, SINGLE_NICE_ABS, derivative, batch))
    if name == "1":  # r is within rounding of ±1: a sign mistake, or merely close
        return ("sign", SIGN) if r < 0 else None
    if informative < 2 and name is None:
        return None  # with one value any ratio is "consistent": only a recognisable one means something
    every = "every value is" if informative >= 2 else "it is"
    sign = "−" if r < 0 else ""
    shown = f"{sign}{name}" if name else num(r)
    sentence = f"{every} {shown} × the expected one"
    if r < 0:
        return "factor", f"{sentence}: the sign is wrong, and {hint or 'a constant factor is off.'}"
    return "factor", f"{sentence}: {hint or 'a constant factor is off (a scale, a learning rate, a wrong constant?)'}"


def _name_ratio(a, tolerance=NICE_RATIO, cap=math.inf, derivative=True, batch=None):
    """``(name, hint)`` for a positive ratio a: ('2', ...), ('1/64', ...), or (None, None). The hint is None for a
    k or 1/k that cannot be the batch size (``batch``: N, False for none, None when unknown)."""
    k = round(a)
    if k >= 2 and abs(a - k) <= min(tolerance * k, cap):
        if k == 2:
            if not derivative:
                return "2", "a term counted twice, or a ½ left out?"
            return "2", "an extra factor 2 (is there a ½ in the loss, or a term counted twice?)."
        return str(k), (f"did you forget to divide by N (N = {k} here)?" if _may_be_batch(k, batch) else None)
    m = round(1 / a) if math.isfinite(1 / a) else 0  # a denormal's inverse overflows: no 1/m to name
    if m >= 2 and abs(1 / a - m) <= min(tolerance * m, cap):
        if m == 2:
            if not derivative:
                return "½", "a ½, or a division by 2, too many?"
            return "½", "a missing factor 2 (the derivative of x² is 2x)?"
        return f"1/{m}", (f"an extra division by N (N = {m} here), or a mean where a sum was wanted?"
                          if _may_be_batch(m, batch) else None)
    if abs(a - 1) <= NICE_RATIO:
        return "1", None
    return None, None


def _may_be_batch(k, batch):
    """Whether a factor k may be the batch size N: always when N is unknown (None), never without a batch (False)."""
    return batch is None or (batch is not False and k == batch)


def _close(got, expected, rtol, atol, scale):
    rel = float((got - expected).abs().max()) / scale
    sentence = (
        f"close, but outside the tolerance: the largest difference is {rel:.1e} of the largest expected value "
        f"(allowed: about {atol / scale + rtol:.0e})."
    )
    if rtol < 1e-5 and within(got, expected, 1e-5, 1e-6 * scale):  # what float32 rounding leaves
        return sentence + " That is float32 precision: did part of your computation run in float32?"
    return sentence + " Rounding alone rarely does this: is a small term missing, or an ε added?"


def _partly_wrong(got, expected, rtol, atol, derivative=True):
    wrong = (got - expected).abs() > atol + rtol * expected.abs()
    count, total = int(wrong.sum()), wrong.numel()
    if count == total and bool(((got == 0) == (expected != 0)).all()):
        return "yours is 0 exactly where the expected is not, and the other way round: is a mask such as (z > 0) inverted?"
    if count == total:
        if not derivative:
            return "the values differ from the expected ones."
        return "the values are different. Check your formula against the chain rule, one factor at a time."
    return f"{count} of {total} values are wrong; the others are right.{_where_wrong(got, expected, wrong)}"


def _where_wrong(got, expected, wrong):
    """A pattern in the wrong positions that points at the mistake, or ''."""
    if bool((expected[wrong] == 0).all()):
        return " They are the ones that should be 0: is a mask such as (z > 0) missing?"
    if bool((got[wrong] == 0).all()):
        return " Yours are 0 there but should not be: is a mask such as (z > 0) at the wrong places?"
    if got.dim() != 2 or got.shape[0] < 2 or got.shape[1] < 2:
        return ""
    rows, cols = wrong.any(dim=1).nonzero().flatten(), wrong.any(dim=0).nonzero().flatten()
    if len(rows) == 1:
        return f" They are all in row {int(rows[0])}."
    if len(cols) == 1:
        return f" They are all in column {int(cols[0])}."
    if bool((wrong.sum(dim=1) == 1).all()):
        return " Exactly one per row is wrong: the column of each row's label (a one-hot term)?"
    return ""


# --------------------------------------------------------------------------- device and dtype
def placement_notes(got, expected):
    """Sentences about device and dtype differences; they explain but do not fail an answer."""
    notes = []
    if got.device != expected.device:
        notes.append(
            f"yours is on {got.device} but the expected gradient is on {expected.device} "
            "(compared on the CPU); create tensors with device=x.device"
        )
    if got.dtype != expected.dtype:
        notes.append(
            f"yours is {dtype_name(got.dtype)} but the expected gradient is {dtype_name(expected.dtype)} "
            "(compared with the tolerance of the less precise)"
        )
    return notes


def dtype_name(dtype):
    """float32 for torch.float32: how the course writes a dtype in a message."""
    return str(dtype).replace("torch.", "")
