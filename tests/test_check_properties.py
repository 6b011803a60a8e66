"""Property tests of gradlab.check over random shapes, scales and both float dtypes.

1. A correct gradient written by hand (an algebraically different formula from autograd's, so it
   rounds differently) always passes with the default tolerances.
2. Each kind of mistake is always diagnosed as that kind and never passes.
3. compare never raises, whatever a student returns.
"""
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradlab.check import TOLERANCES, autograd_grads, compare, factor_by_case, numerical_grads
from gradlab.diagnose import within

FAST = settings(max_examples=40, deadline=None)
dtypes = st.sampled_from([torch.float32, torch.float64])
log_scales = st.floats(-3, 3)


def randn(seed, *shape, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(tuple(shape), generator=gen, dtype=torch.float64)).to(dtype)


def assert_passes(name, hand, reference):
    result = compare(name, hand, reference)
    assert result.ok, f"{result}\n{result.explain()}"


# --------------------------------------------------------------------------- 1. correct answers pass
@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(1, 64), d=st.integers(1, 300), dtype=dtypes, log_scale=log_scales)
def test_mean_squared_error_of_a_linear_model(seed, n, d, dtype, log_scale):
    scale = 10.0**log_scale
    x, w = randn(seed, n, d, dtype=dtype, scale=scale), randn(seed + 1, d, dtype=dtype)
    b, y = randn(seed + 2, dtype=dtype), randn(seed + 3, n, dtype=dtype, scale=scale)
    residual = x @ w + b - y
    dw, db = autograd_grads(lambda w_, b_: ((x @ w_ + b_ - y) ** 2).mean(), w, b)
    assert_passes("dw", (2.0 / n) * (residual @ x), dw)  # x.T @ r written as r @ x
    assert_passes("db", 2.0 * residual.mean(), db)


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(1, 64), c=st.integers(2, 12), dtype=dtypes,
       logit_scale=st.floats(0.01, 30), shift=st.sampled_from([0.0, 500.0]))
def test_softmax_cross_entropy(seed, n, c, dtype, logit_scale, shift):
    logits = randn(seed, n, c, dtype=dtype, scale=logit_scale) + shift
    labels = torch.randint(c, (n,), generator=torch.Generator().manual_seed(seed))
    (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
    e = (logits - logits.max(dim=1, keepdim=True).values).exp()
    hand = (e / e.sum(dim=1, keepdim=True) - F.one_hot(labels, c).to(dtype)) / n
    assert_passes("dlogits", hand, expected)


@FAST
@given(seed=st.integers(0, 2**31), n=st.integers(1, 64), sizes=st.tuples(st.integers(1, 784), st.integers(1, 64)),
       dtype=dtypes, log_scale=log_scales)
def test_two_layer_relu_network(seed, n, sizes, dtype, log_scale):
    d, h = sizes
    x = randn(seed, n, d, dtype=dtype, scale=10.0**log_scale)
    W1, b1 = randn(seed + 1, d, h, dtype=dtype, scale=d**-0.5), randn(seed + 2, h, dtype=dtype)
    W2, dout = randn(seed + 3, h, 3, dtype=dtype, scale=h**-0.5), randn(seed + 4, n, 3, dtype=dtype)

    def loss(W1_, b1_, W2_):
        return ((torch.relu(x @ W1_ + b1_) @ W2_) * dout).sum()

    expected = autograd_grads(loss, W1, b1, W2)
    z = x @ W1 + b1
    hidden = torch.clamp(z, min=0)
    dz = (dout @ W2.T) * (z > 0).to(dtype)
    hand = (torch.einsum("ni,nj->ij", x, dz), dz.sum(dim=0), torch.einsum("ni,nj->ij", hidden, dout))
    for name, got, exp in zip(("dW1", "db1", "dW2"), hand, expected):
        assert_passes(name, got, exp)


@FAST
@given(seed=st.integers(0, 2**31), shape=st.lists(st.integers(1, 9), min_size=0, max_size=3), dtype=dtypes,
       log_scale=st.floats(-2, 1.5))
def test_sigmoid_and_tanh_derivatives(seed, shape, dtype, log_scale):
    # Beyond |z| ≈ 6, 1 − σ and 1 − tanh² keep few digits (in float32, and for tanh even in float64),
    # so autograd itself is no reference there, and a lone tiny value cannot be judged against its
    # own size (see test_check.py::test_saturated_sigmoid_needs_an_absolute_atol): the property stops at 6.
    z = randn(seed, *shape, dtype=dtype, scale=10.0**log_scale).clamp(-6, 6)
    dout = randn(seed + 1, *shape, dtype=dtype)

    def truth(activation):  # autograd in float64: the accurate answer for the same inputs
        return autograd_grads(lambda z_: (activation(z_) * dout.double()).sum(), z.double())[0]

    assert_passes("dz sigmoid", dout * torch.exp(-z) / (1 + torch.exp(-z)) ** 2, truth(torch.sigmoid))
    assert_passes("dz tanh", dout / torch.cosh(z) ** 2, truth(torch.tanh))
    # the textbook σ(1 − σ), against autograd in the same dtype
    (ds,) = autograd_grads(lambda z_: (torch.sigmoid(z_) * dout).sum(), z)
    s = 1 / (1 + torch.exp(-z))
    assert_passes("dz sigmoid, σ(1 − σ)", dout * s * (1 - s), ds)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 5), d=st.integers(1, 5), log_scale=st.floats(-1, 0.5))
def test_numerical_gradients_agree_with_autograd(seed, n, d, log_scale):
    x, w = randn(seed, n, d, scale=10.0**log_scale), randn(seed + 1, d, 2)
    labels = torch.randint(2, (n,), generator=torch.Generator().manual_seed(seed))

    def loss(x_, w_):
        return F.cross_entropy(torch.tanh(x_ @ w_) * 3, labels) + (w_**2).sum()

    for name, num, auto in zip(("dx", "dw"), numerical_grads(loss, x, w), autograd_grads(loss, x, w)):
        result = compare(name, num, auto, atol=1e-7)  # absolute: the error of differences follows |f|
        assert result.ok, f"{result}\n{result.explain()}"


@FAST
@given(seed=st.integers(0, 2**31), shape=st.lists(st.integers(1, 9), max_size=3))
def test_an_answer_in_the_other_float_dtype_passes(seed, shape):
    e = randn(seed, *shape)
    assert_passes("x", e.float(), e)
    assert_passes("x", e, e.float())


# --------------------------------------------------------------------------- 2. mistakes are named
@st.composite
def references(draw, min_dims=0):
    """(expected, dtype): random normal values at a random scale, sometimes with ReLU-style zeros."""
    shape = draw(st.lists(st.integers(1, 8), min_size=min_dims, max_size=3))
    dtype = draw(dtypes)
    e = randn(draw(st.integers(0, 2**31)), *shape, dtype=dtype, scale=10.0 ** draw(st.floats(-4, 4)))
    if draw(st.booleans()):
        e = e * (randn(draw(st.integers(0, 2**31)), *shape) > 0).to(dtype)
    assume(bool((e != 0).any()))
    return e


def assert_diagnosed(got, expected, kind):
    result = compare("g", got, expected)
    assert not result.ok and result.kind == kind, f"{result}: {result.diagnosis}"
    assert result.diagnosis
    return result


@FAST
@given(e=references())
def test_wrong_sign_is_named(e):
    assert_diagnosed(-e, e, "sign")


@FAST
@given(e=references(), which=st.sampled_from(["2", "½", "N", "1/N"]), n=st.integers(3, 1000))
def test_recognisable_factors_are_named_even_for_one_value(e, which, n):
    factor = {"2": 2.0, "½": 0.5, "N": float(n), "1/N": 1.0 / n}[which]
    result = assert_diagnosed(e * factor, e, "factor")
    shown = which.replace("N", str(n))
    assert f" {shown} × the expected one" in result.diagnosis


@FAST
@given(e=references(), which=st.sampled_from(["N", "1/N"]), n=st.integers(3, 1000), batch=st.sampled_from([False, 2]))
def test_a_factor_is_no_batch_size_where_the_exercise_has_none_or_another(e, which, n, batch):
    factor = float(n) if which == "N" else 1.0 / n
    result = compare("g", e * factor, e, batch=batch)
    assert not result.ok and result.kind == "factor", f"{result}: {result.diagnosis}"
    assert f" {which.replace('N', str(n))} × the expected one" in result.diagnosis
    assert "by N" not in result.diagnosis and "N =" not in result.diagnosis


@FAST
@given(e=references(), mistake=st.sampled_from(["½", "2", "zeros", "values"]), batch=st.sampled_from([None, False]))
def test_a_value_that_is_no_gradient_is_never_told_about_derivatives(e, mistake, batch):
    got = {"½": e / 2, "2": e * 2, "zeros": torch.zeros_like(e),
           "values": e + float(e.abs().max()) * (1 + torch.arange(e.numel(), dtype=e.dtype).reshape(e.shape))}[mistake]
    result = compare("loss", got, e, derivative=False, batch=batch)
    assert not result.ok and result.diagnosis
    for words in ("derivative", "chain rule", "gradient"):
        assert words not in result.diagnosis, result.diagnosis


@FAST
@given(e=references(), ratio=st.floats(1.05, 50), negative=st.booleans())
def test_any_consistent_ratio_is_reported(e, ratio, negative):
    assume(int((e != 0).sum()) >= 2)  # with one value every ratio is "consistent": see test_check.py
    ratio = -ratio if negative else ratio
    for r in (ratio, 1 / ratio):
        result = assert_diagnosed(e * r, e, "factor")
        assert "× the expected one" in result.diagnosis
        assert ("the sign is wrong" in result.diagnosis) == negative


@FAST
@given(e=references(min_dims=2))
def test_transposed_is_named(e):
    e = e.reshape(e.shape[0], -1)
    assume(e.shape[0] != e.shape[1] or not within(e.T, e, 1e-3, 1e-3 * float(e.abs().max())))
    assert_diagnosed(e.T.clone(), e, "transposed")


@FAST
@given(e=references(), keep=st.booleans())
def test_size_one_dimension_trap_is_named(e, keep):
    flat = e.flatten()
    got, expected = (flat[:, None], flat) if keep else (flat, flat[:, None])
    result = assert_diagnosed(got, expected, "shape")
    assert result.status == "wrong"


@FAST
@given(e=references(), where=st.integers(0, 10**6), bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_nan_and_inf_are_named(e, where, bad):
    got = e.clone().flatten()
    got[where % got.numel()] = bad
    assert_diagnosed(got.reshape(e.shape), e, "nan")


@FAST
@given(e=references())
def test_all_zeros_is_named(e):
    assert_diagnosed(torch.zeros_like(e), e, "zeros")


@FAST
@given(e=references(), where=st.integers(0, 10**6), times=st.floats(2, 50))
def test_just_outside_tolerance_is_close(e, where, times):
    rtol, atol = TOLERANCES[e.dtype]
    got = e.clone().flatten()
    k = where % got.numel()
    got[k] += times * (atol * float(e.abs().max()) + rtol * abs(float(got[k])))
    assume(not within(got.double(), e.flatten().double(), rtol, atol * float(e.abs().max())))  # float32 rounding
    assert_diagnosed(got.reshape(e.shape), e, "close")


# --------------------------------------------------------------------------- 3. never raises
anything = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**400), 10**400), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.lists(st.floats(), max_size=4), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.builds(lambda shape, dt: torch.zeros(shape, dtype=dt), st.lists(st.integers(0, 4), max_size=3),
              st.sampled_from([torch.float16, torch.bfloat16, torch.int8, torch.bool, torch.complex64, torch.float64])),
    st.builds(lambda shape, dt: np.ones(shape, dtype=dt), st.lists(st.integers(0, 4), max_size=3),
              st.sampled_from([np.float32, np.int64, np.bool_, np.complex128, object, "U3"])),
)


@settings(max_examples=150, deadline=None)
@given(got=anything, shape=st.lists(st.integers(1, 4), max_size=2))
def test_factor_by_case_never_raises(got, shape):
    said = factor_by_case([(got, torch.ones(shape), 3), (torch.full(shape, 3.5), torch.ones(shape), 7)])
    assert said is None or isinstance(said, str)


@settings(max_examples=150, deadline=None)
@given(got=anything, shape=st.lists(st.integers(1, 4), max_size=2))
def test_compare_never_raises(got, shape):
    result = compare("g", got, torch.ones(shape))
    assert result.status in ("exact", "close", "wrong", "error")
    assert result.ok == (result.status in ("exact", "close"))
    assert (result.diagnosis is None) == (result.ok and result.kind is None)
    str(result), result._repr_html_(), result.explain("ctx")
