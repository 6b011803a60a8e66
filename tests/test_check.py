"""gradlab.check: statuses, every diagnosis and its message, the reference gradients, the report."""
import numpy as np
import pytest
import torch

import gradlab
from gradlab.check import TOLERANCES, autograd_grads, check_grad, compare, factor_by_case, numerical_grads, report


@pytest.fixture
def expected():
    return torch.tensor([[0.5, -1.25, 2.0], [-0.75, 3.0, 1.5]])


def message(got, expected, **kw):
    with pytest.raises(AssertionError) as info:
        check_grad("dW", got, expected, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- statuses
def test_exact_close_wrong(expected):
    assert compare("dW", expected.clone(), expected).status == "exact"
    close = compare("dW", expected * (1 + 1e-6), expected)
    assert close.status == "close" and close.ok and 0 < close.max_abs_diff < 1e-5
    wrong = compare("dW", expected + 0.1, expected)
    assert wrong.status == "wrong" and not wrong.ok
    assert wrong.max_abs_diff == pytest.approx(0.1, rel=1e-5)
    assert wrong.rel_err == pytest.approx(0.1 / 3.0, rel=1e-5)


def test_check_grad_returns_the_comparison_when_right(expected):
    result = check_grad("dW", expected.clone(), expected)
    assert result.ok and result.name == "dW"


def test_exports_from_the_package():
    for name in ("compare", "check_grad", "report", "autograd_grads", "numerical_grads", "Comparison"):
        assert getattr(gradlab, name) is getattr(gradlab.check, name)
        assert name in gradlab.__all__


def test_numbers_and_numpy_are_accepted(expected):
    assert compare("loss", 2.5, torch.tensor(2.5)).status == "exact"
    assert compare("loss", 3, torch.tensor(3.0, dtype=torch.float64)).status == "exact"
    assert compare("dW", expected.numpy(), expected).status == "exact"
    assert compare("dW", np.float32(0.5), torch.tensor(0.5)).status == "exact"
    assert compare("dW", expected, expected.numpy()).status == "exact"


def test_requires_grad_sparse_and_non_contiguous_tensors_are_fine(expected):
    assert compare("dW", expected.clone().requires_grad_(), expected).ok
    assert compare("dW", expected.to_sparse(), expected).status == "exact"
    assert compare("dW", expected.T.contiguous().T, expected).status == "exact"


def test_a_number_too_big_for_a_float_is_an_error_not_a_crash():
    result = compare("loss", 10**400, torch.tensor(1.0))
    assert result.status == "error" and "could not read it as numbers" in result.diagnosis


# --------------------------------------------------------------------------- each diagnosis
@pytest.mark.parametrize(
    "got, kind, words",
    [
        (None, "none", "got None"),
        ([1.0, 2.0], "type", "torch.tensor"),
        ("0.5", "type", "string"),
        (True, "type", "bool"),
        ({"dW": 1}, "type", "dict"),
        (np.array(["a", "b"]), "type", "NumPy array"),
        (torch.tensor([1 + 2j]), "type", "complex"),
    ],
)
def test_unreadable_answers_are_errors(expected, got, kind, words):
    result = compare("dW", got, expected)
    assert (result.status, result.kind, result.ok) == ("error", kind, False)
    assert words in result.diagnosis
    assert result.max_abs_diff is None


def test_a_tuple_of_tensors_suggests_unpacking(expected):
    result = compare("dW", (expected, expected), expected)
    assert result.kind == "type" and "torch.stack" in result.diagnosis and "2 tensors" in result.diagnosis


def test_wrong_sign(expected):
    result = compare("dW", -expected, expected)
    assert result.kind == "sign" and "sign" in result.diagnosis


@pytest.mark.parametrize(
    "factor, words",
    [(2.0, "2 × the expected one: an extra factor 2"), (0.5, "½ × the expected one: a missing factor 2"),
     (64.0, "64 × the expected one: did you forget to divide by N (N = 64 here)?"),
     (1 / 32, "1/32 × the expected one: an extra division by N (N = 32 here)"),
     (3.7, "3.7 × the expected one: a constant factor is off"),
     (-2.0, "−2 × the expected one: the sign is wrong, and an extra factor 2")],
)
def test_constant_factor(expected, factor, words):
    result = compare("dW", expected * factor, expected)
    assert result.kind == "factor" and not result.ok
    assert words in result.diagnosis


@pytest.mark.parametrize("factor, batch, words, not_words", [
    (1 / 10, False, "1/10 × the expected one: a constant factor is off", "N ="),  # no batch: 1/10 is not a 1/N
    (10.0, False, "10 × the expected one: a constant factor is off", "divide by N"),
    (64.0, 64, "64 × the expected one: did you forget to divide by N (N = 64 here)?", None),  # the batch size: named
    (1 / 7, 7, "1/7 × the expected one: an extra division by N (N = 7 here)", None),
    (32.0, 64, "32 × the expected one: a constant factor is off", "N = 32"),  # not this case's N
    (2.0, False, "2 × the expected one: an extra factor 2", None),  # the factor-2 wording needs no N
])
def test_a_factor_is_a_batch_size_only_where_it_can_be(expected, factor, batch, words, not_words):
    result = compare("dW", expected * factor, expected, batch=batch)
    assert result.kind == "factor" and words in result.diagnosis
    assert not_words is None or not_words not in result.diagnosis


@pytest.mark.parametrize("factor, words", [(0.5, "½ × the expected one: a ½, or a division by 2, too many?"),
                                           (2.0, "2 × the expected one: a term counted twice, or a ½ left out?")])
def test_a_value_that_is_no_gradient_is_not_told_about_derivatives(expected, factor, words):
    result = compare("MSE", expected * factor, expected, derivative=False)
    assert result.kind == "factor" and words in result.diagnosis
    assert "derivative" not in result.diagnosis and "factor 2" not in result.diagnosis  # the report's gradient phrases


def test_values_of_no_gradient_differ_without_the_chain_rule(expected):
    wrong = expected + torch.tensor([[1.0, 2.0, -3.0], [0.5, -1.0, 2.5]])
    value = compare("σ(z)", wrong, expected, derivative=False)
    assert value.kind == "values" and value.diagnosis == "the values differ from the expected ones."
    gradient = compare("dW", wrong, expected)  # a gradient keeps its chain-rule advice
    assert gradient.kind == "values" and "chain rule" in gradient.diagnosis
    zeros = compare("class means", torch.zeros_like(expected), expected, derivative=False)
    assert zeros.kind == "zeros" and "gradient" not in zeros.diagnosis
    with pytest.raises(AssertionError, match="the values differ from the expected ones"):
        check_grad("z", wrong, expected, derivative=False)


def test_a_factor_that_changes_with_n_names_no_one_constant():
    gen = torch.Generator().manual_seed(3)
    cases = [(n, torch.randn(n, 2, generator=gen, dtype=torch.float64)) for n in (1, 7, 64)]
    # the 2/N of a mean of squares lost: ½, 3.5, 32 in the three cases, N/2 in all of them
    both = factor_by_case([(e * n / 2, e, n) for n, e in cases])
    assert "N/2 × the expected one in every case (N = 1: ½, N = 7: 3.5, N = 64: 32)" in both
    assert "both factors of 2/N are missing" in both
    differs = factor_by_case([(e * n ** 0.5, e, n) for n, e in cases])
    assert "the multiple differs between the cases" in differs and "no one constant is missing" in differs
    # what one case's message says right stays with it: one constant, or N in every case (a missing 1/N)
    assert factor_by_case([(e / 2, e, n) for n, e in cases]) is None
    assert factor_by_case([(e * n, e, n) for n, e in cases]) is None
    # not a multiple in some case, or one value per case (any two numbers are multiples): nothing to say
    assert factor_by_case([(e * n / 2 + (n == 7), e, n) for n, e in cases]) is None
    assert factor_by_case([(e[0, 0] * n ** 0.5, e[0, 0], n) for n, e in cases]) is None
    assert factor_by_case([(None, e, n) for n, e in cases]) is None


def test_a_denormal_ratio_is_no_unreadable_number():
    result = compare("g", 5e-324, torch.ones(()))  # 1/ratio overflows: it was "could not read it as numbers"
    assert result.status == "wrong" and result.kind == "values"


def test_transposed_rectangular_is_wrong_but_compared(expected):
    result = compare("dW", expected.T.clone(), expected)
    assert (result.status, result.kind) == ("wrong", "transposed")
    assert result.max_abs_diff == 0
    assert "(3, 2) but expected (2, 3), its transpose" in result.diagnosis and "Even" not in result.diagnosis


def test_transposed_square_matrix():
    e = torch.tensor([[1.0, 2.0], [-3.0, 4.0]])
    assert compare("dW", e.T.clone(), e).kind == "transposed"


@pytest.mark.parametrize("got_shape, exp_shape", [((5,), (5, 1)), ((5, 1), (5,)), ((1, 5), (5,))])
def test_size_one_dimension_trap(got_shape, exp_shape):
    values = torch.arange(1.0, 6.0)
    result = compare("db", values.reshape(got_shape), values.reshape(exp_shape))
    assert (result.status, result.kind) == ("wrong", "shape")
    assert "(N,) and (N, 1)" in result.diagnosis and "reshape" in result.diagnosis


def test_broadcast_square_matrix_is_the_trap():
    e = torch.arange(1.0, 6.0)
    result = compare("dy", e[:, None] - e[None, :], e)
    assert (result.status, result.kind) == ("error", "shape")
    assert "broadcasting trap" in result.diagnosis


def test_extra_batch_dimension_suggests_summing():
    per_example = torch.randn(8, 3)
    result = compare("db", per_example, per_example.sum(dim=0))
    assert (result.status, result.kind) == ("error", "shape")
    assert "summing it over dim=0 gives the expected values" in result.diagnosis


def test_summed_to_one_number(expected):
    result = compare("dW", expected.sum(), expected)
    assert result.kind == "shape" and ".sum()" in result.diagnosis


@pytest.mark.parametrize(
    "got, exp, words",
    [
        (torch.randn(4, 3), torch.randn(3), "extra first dimension of size 4 (one row per example?): should it be summed"),
        (torch.randn(3), torch.randn(4, 3), "The first dimension (size 4) is missing"),
    ],
)
def test_shape_hints(got, exp, words):
    result = compare("db", got, exp)
    assert (result.status, result.kind) == ("error", "shape") and words in result.diagnosis


def test_other_shape_is_an_error(expected):
    result = compare("dW", torch.ones(7), expected)
    assert (result.status, result.kind) == ("error", "shape")
    assert "shape (7,) but expected (2, 3)" in result.diagnosis


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "inf"), (-float("inf"), "inf")])
def test_nan_and_inf(expected, bad, word):
    got = expected.clone()
    got[1, 2] = bad
    result = compare("dW", got, expected)
    assert result.kind == "nan" and f"1 of 6 values are {word}" in result.diagnosis
    assert "(1, 2)" in result.diagnosis and result.max_abs_diff == float("inf")


def test_matching_nan_in_the_reference_counts_as_equal():
    e = torch.tensor([1.0, float("nan"), float("inf")])
    assert compare("x", e.clone(), e).ok
    assert not compare("x", torch.tensor([1.0, float("nan"), 5.0]), e).ok


def test_all_zeros(expected):
    result = compare("dW", torch.zeros_like(expected), expected)
    assert result.kind == "zeros" and "every value is 0" in result.diagnosis


def test_expected_zeros_but_got_something():
    result = compare("dW", torch.tensor([0.0, 1.0]), torch.zeros(2))
    assert result.kind == "values" and "expected every value to be 0" in result.diagnosis


def test_close_but_outside_tolerance(expected):
    got = expected.clone()
    got[0, 0] += 1e-3
    result = compare("dW", got, expected)
    assert result.kind == "close" and "outside the tolerance" in result.diagnosis


def test_float32_precision_in_a_float64_answer_is_named():
    e = torch.randn(50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = e.float().double() + 1e-6 * e.abs().max()  # float32 rounding plus a little more
    result = compare("dx", got, e)
    assert result.kind == "close" and "float32" in result.diagnosis


def test_some_values_wrong_in_one_row(expected):
    got = expected.clone()
    got[1] += torch.tensor([1.0, -2.0, 0.5])
    result = compare("dW", got, expected)
    assert result.kind == "values" and "3 of 6 values are wrong" in result.diagnosis and "row 1" in result.diagnosis


@pytest.fixture
def relu_case():
    gen = torch.Generator().manual_seed(5)
    z, dout = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    return z, dout, dout * (z > 0)


def test_missing_relu_mask(relu_case):
    z, dout, expected = relu_case
    result = compare("dz", dout, expected)
    assert result.kind == "values" and "should be 0: is a mask such as (z > 0) missing?" in result.diagnosis


def test_relu_mask_at_the_wrong_places(relu_case):
    z, dout, expected = relu_case
    result = compare("dz", dout * (z > 0) * (z > 0.5), expected)
    assert "Yours are 0 there but should not be" in result.diagnosis
    assert "is a mask such as (z > 0) inverted?" in compare("dz", dout * (z <= 0), expected).diagnosis


def test_one_wrong_value_per_row_points_at_the_label():
    p = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    labels = torch.tensor([0, 3, 1, 4, 4, 2])
    result = compare("dlogits", p / 6, (p - torch.nn.functional.one_hot(labels, 5)) / 6)
    assert "6 of 30 values are wrong" in result.diagnosis and "one per row" in result.diagnosis


def test_wrong_view_keeps_the_count_of_values(expected):
    result = compare("dW", expected.reshape(3, 2), expected.reshape(2, 3))  # a .view where .T was meant
    assert (result.status, result.kind) == ("wrong", "transposed")
    assert "its transpose" in result.diagnosis and "Even lined up that way, 4 of 6 values are wrong" in result.diagnosis
    result = compare("dW", torch.zeros(6, 1, 2), torch.zeros(3, 4))
    assert result.status == "error" and "right number of values" in result.diagnosis


def test_wrong_values_in_one_column_and_everywhere(expected):
    got = expected.clone()
    got[:, 2] += 1.0
    assert "They are all in column 2." in compare("dW", got, expected).diagnosis
    everywhere = compare("dW", expected + torch.tensor([[1.0, 2.0, -3.0], [0.5, -1.0, 2.5]]), expected)
    assert everywhere.kind == "values" and "the values are different" in everywhere.diagnosis


def test_close_without_a_precision_story(expected):
    got = expected.double()
    got[0, 0] += 1e-3  # float64 answer and reference, too far apart for float32 rounding
    result = compare("dW", got, expected.double())
    assert result.kind == "close" and "Rounding alone rarely does this" in result.diagnosis


def test_meta_tensor_is_an_error(expected):
    result = compare("dW", torch.empty(2, 3, device="meta"), expected)
    assert result.status == "error" and "meta" in result.diagnosis


def test_the_check_needs_no_notebook_machinery():
    import subprocess
    import sys

    code = (
        "import sys, gradlab.check; "
        "bad = {m.split('.')[0] for m in sys.modules} & {'nbgrader', 'IPython', 'ipywidgets', 'nbformat', 'matplotlib'}; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_single_element_ratio_is_named_only_when_recognisable():
    assert compare("x", torch.tensor([6.0]), torch.tensor([3.0])).kind == "factor"
    assert compare("x", torch.tensor([-3.0]), torch.tensor([3.0])).kind == "sign"
    odd = compare("x", torch.tensor([3.37]), torch.tensor([3.0]))
    assert odd.kind == "values" and "×" not in odd.diagnosis


# --------------------------------------------------------------------------- dtype and device
def test_dtype_mismatch_uses_the_less_precise_tolerance():
    e = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    result = compare("dx", e.float(), e)
    assert result.ok and result.kind == "placement" and "float32" in result.diagnosis
    rtol, atol = TOLERANCES[torch.float32]
    assert not compare("dx", e * (1 + 10 * rtol), e.float()).ok


def test_explicit_tolerances_win():
    e = torch.ones(3)
    assert not compare("x", e * 1.01, e).ok
    assert compare("x", e * 1.01, e, rtol=0.02, atol=0).ok


def test_integer_answers_compare_exactly():
    assert compare("n", torch.tensor([1, 2]), torch.tensor([1, 2])).status == "exact"
    assert not compare("n", torch.tensor([1, 3]), torch.tensor([1, 2])).ok


def test_device_notes_name_both_devices():
    from gradlab.diagnose import placement_notes

    class Fake:  # placement_notes reads only .device and .dtype, so no GPU is needed to test the words
        def __init__(self, device, dtype=torch.float32):
            self.device, self.dtype = torch.device(device), dtype

    (note,) = placement_notes(Fake("cpu"), Fake("cuda:0"))
    assert "yours is on cpu but the expected gradient is on cuda:0" in note and "device=" in note
    assert placement_notes(Fake("cpu"), Fake("cpu")) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_another_device_is_compared_on_the_cpu():
    e = torch.randn(4, 3, device="cuda")
    assert compare("dW", e.cpu(), e).ok
    result = compare("dW", -e.cpu(), e)
    assert result.kind == "sign" and "cuda" in result.diagnosis


# --------------------------------------------------------------------------- the message a student reads
def test_message_has_everything_and_stays_short():
    e = torch.linspace(-1, 1, 40).reshape(8, 5)
    text = message(-e, e, context="n=8, float32, cpu")
    lines = text.splitlines()
    assert lines[0].startswith("dW is wrong (n=8, float32, cpu): every value has the wrong sign")
    assert "expected: shape (8, 5) float32 on cpu" in text and "got:      shape (8, 5) float32 on cpu" in text
    assert "largest difference: 2 at index (0, 0)" in text and "(40 values)" in text
    assert len(lines) <= 6 and max(len(line) for line in lines) < 200
    assert text.count(",") < 40  # at most a handful of values per tensor


def test_message_for_none_names_the_gradient():
    text = message(None, torch.ones(2), context="n=1")
    assert text.startswith("dW could not be checked (n=1): got None")
    assert "expected: shape (2,)" in text


def test_one_line_str(expected):
    line = str(compare("dW1", -expected, expected))
    assert "\n" not in line and line.startswith("dW1") and "wrong" in line and "6.00e+00" in line and "sign" in line


def test_html_escapes_names(expected):
    html = compare("<dW>", expected, expected)._repr_html_()
    assert "&lt;dW&gt;" in html and "<table>" in html


def test_report_text_and_html(expected):
    rows = report([compare("dW", expected, expected), compare("db", None, expected),
                   compare("a much longer name than sixteen", -expected, expected)])
    text = str(rows)
    assert len(text.splitlines()) == 3 and "exact" in text and "error" in text and "wrong sign" in text
    assert len({line.index(" | ") for line in text.splitlines() if " | " in line}) == 1  # columns line up
    assert rows._repr_html_().count("<tr>") == 4 and not rows.ok
    assert repr(rows) == text  # what a console or a text/plain output shows
    assert report([compare("dW", expected, expected)]).ok


def test_a_broken_reference_is_the_grader_s_bug():
    with pytest.raises(TypeError, match="expected gradient"):
        compare("dW", torch.ones(2), None)


# --------------------------------------------------------------------------- reference gradients
def f(x, w):
    return ((x @ w).tanh() ** 2).sum()


def test_autograd_grads_does_not_touch_inputs():
    x, w = torch.randn(4, 3), torch.randn(3, 2, requires_grad=True)
    before = (x.clone(), w.detach().clone())
    dx, dw = autograd_grads(f, x, w)
    assert dx.shape == x.shape and dw.shape == w.shape and not dx.requires_grad
    assert torch.equal(x, before[0]) and torch.equal(w.detach(), before[1]) and w.grad is None


def test_autograd_grads_works_under_no_grad_and_unused_inputs_get_zeros():
    x, unused = torch.randn(3), torch.randn(2)
    with torch.no_grad():
        dx, du = autograd_grads(lambda a, b: (a**2).sum(), x, unused)
    assert torch.allclose(dx, 2 * x) and torch.equal(du, torch.zeros(2))


def test_autograd_grads_rejects_non_scalar_and_integer_inputs():
    with pytest.raises(ValueError, match="scalar"):
        autograd_grads(lambda a: a * 2, torch.randn(3))
    with pytest.raises(TypeError, match="floating-point"):
        autograd_grads(lambda a: a.sum(), torch.arange(3))


def test_numerical_grads_of_a_transposed_view_and_a_python_number_result():
    w = torch.randn(3, 2, dtype=torch.float64).T  # not contiguous
    (num,) = numerical_grads(lambda a: float((a**2).sum()), w)
    check_grad("d(w²)", num, 2 * w, atol=1e-7)


def test_numerical_grads_rejects_a_non_scalar():
    with pytest.raises(ValueError, match="scalar"):
        numerical_grads(lambda a: a * 2, torch.randn(3))


def test_numerical_grads_agree_with_autograd_in_float64_defaults():
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(4, 3, generator=gen), torch.randn(3, 2, generator=gen)
    x0 = x.clone()
    for num, auto in zip(numerical_grads(f, x, w), autograd_grads(f, x.double(), w.double())):
        assert num.dtype == torch.float64
        check_grad("numerical vs autograd", num, auto)
    assert torch.equal(x, x0)


def test_saturated_sigmoid_needs_an_absolute_atol():
    """σ(1 − σ) at z = 12 in float32 keeps no digit that agrees with the accurate value; an absolute atol allows it."""
    z = torch.tensor(12.0)
    s = torch.sigmoid(z)
    textbook, accurate = s * (1 - s), torch.exp(-z) / (1 + torch.exp(-z)) ** 2
    assert not compare("dz", textbook, accurate).ok
    assert compare("dz", textbook, accurate, atol=1e-6).ok


def test_default_atol_follows_the_size_of_the_gradient():
    for scale in (1e-6, 1.0, 1e6):
        e = scale * torch.tensor([1.0, -0.5, 1e-3], dtype=torch.float64)
        assert compare("x", e + scale * 5e-9, e).ok
        assert not compare("x", e + scale * 5e-8, e).ok


def test_a_wrong_answer_in_another_dtype_mentions_it_once():
    text = message(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert text.count("yours is float32 but the expected gradient is float64") == 1
    assert "2 × the expected one" in text


@pytest.mark.parametrize("scale", [1e-170, 1e170])
def test_factors_at_extreme_scales(scale):
    e = scale * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert "every value is 3 × the expected one" in compare("x", 3 * e, e).diagnosis
    assert compare("x", -e, e).kind == "sign"
