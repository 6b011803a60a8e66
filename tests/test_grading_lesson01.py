"""The hidden checks of lesson 1 pass the lesson's own solutions and every valid variant a docstring allows, and
fail typical mistakes with a message that names the mistake. The important cases run both ways the grader runs a
check (locally, and recorded in the kernel then replayed), which must agree: tests/grading_modes.py."""
import pytest
import torch

from course import solution_namespace
from grading_modes import both
from gradlab.grading import lesson01

SOLUTIONS = solution_namespace("01-one-neuron/one-neuron.ipynb")
linear, sigmoid, sse, mse, dsse_dw = (SOLUTIONS[n] for n in ("linear", "sigmoid", "sse", "mse", "dsse_dw"))
CHECKS = (lesson01.check_linear, lesson01.check_sigmoid, lesson01.check_sse, lesson01.check_mse,
          lesson01.check_dsse_dw)


def passes(check, fn):
    err, verdict = both(check, fn)
    assert err is None, err
    return verdict


def fails(check, fn, kind, *needles):
    """The check fails ``fn`` both ways, with this kind and a message holding every needle."""
    err, verdict = both(check, fn)
    assert err is not None, "the check passed"
    message = str(err)
    assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert needle in message, message
    return message


def namespace(source):
    """Functions defined as in a student's notebook: one module namespace, so they call each other by name."""
    ns = {"torch": torch}
    exec(source, ns)
    return ns


def test_the_lesson_solutions_pass_both_ways():
    for check, fn in zip(CHECKS, (linear, sigmoid, sse, mse, dsse_dw)):
        verdict = passes(check, fn)
        assert not verdict.notes, verdict.notes


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution, then run the check below.")
    for check in CHECKS:
        fails(check, stub, "not written", "not written yet")


# ---------------------------------------------------------------- linear and sigmoid
def test_linear_variants_pass():
    passes(lesson01.check_linear, lambda X, w, b=0.0: torch.addcmul(torch.as_tensor(b, dtype=X.dtype, device=X.device),
                                                                     X, torch.as_tensor(w, dtype=X.dtype, device=X.device)))
    passes(lesson01.check_linear, lambda X, w, b=0.0: X @ torch.as_tensor(w, dtype=X.dtype, device=X.device).reshape(1, 1) + b)

    def own_copy_in_place(X, w, b=0.0):
        z = X.clone()
        z.mul_(w).add_(b)
        return z
    passes(lesson01.check_linear, own_copy_in_place)


def test_linear_without_the_bias_fails():
    fails(lesson01.check_linear, lambda X, w, b=0.0: X * w, "values", "z = X·w + b is wrong")


def test_linear_that_needs_the_bias_argument_is_told_how_it_was_called():
    fails(lesson01.check_linear, lambda X, w, b: X * w + b, "exception", "missing 1 required positional argument")


def test_linear_that_only_takes_tensors_fails_on_python_numbers():
    fails(lesson01.check_linear, lambda X, w, b=0.0: X * w.item() + b, "exception", "Python numbers")


def test_linear_that_scales_its_input_in_place_fails():
    def in_place(X, w, b=0.0):
        X *= w
        return X + b
    fails(lesson01.check_linear, in_place, "changed input", "changed its input `X` in place")


def test_linear_that_flattens_the_column_fails_on_its_shape():
    fails(lesson01.check_linear, lambda X, w, b=0.0: (X * w + b).reshape(-1), "shape", "shape")


def test_sigmoid_variants_pass():
    passes(lesson01.check_sigmoid, lambda z: torch.exp(z) / (1 + torch.exp(z)))
    passes(lesson01.check_sigmoid, lambda z: torch.where(z >= 0, 1 / (1 + torch.exp(-z)), torch.exp(z) / (1 + torch.exp(z))))
    passes(lesson01.check_sigmoid, lambda z: 0.5 * (1 + torch.tanh(z / 2)))

    def own_copy_in_place(z):
        e = torch.exp(-z)
        e.add_(1).reciprocal_()
        return e
    passes(lesson01.check_sigmoid, own_copy_in_place)


@pytest.mark.parametrize("wrong", [
    lambda z: 1 / (1 + torch.exp(z)),          # the sign in the exponent
    lambda z: 1 / (1 - torch.exp(-z)),
    lambda z: torch.exp(-z) / (1 + torch.exp(-z)),
])
def test_wrong_sigmoids_fail(wrong):
    with pytest.raises(AssertionError, match=r"σ\(z\) is wrong"):
        lesson01.check_sigmoid(wrong)


def test_a_sigmoid_that_works_only_on_columns_fails():
    with pytest.raises(AssertionError, match="sigmoid"):
        lesson01.check_sigmoid(lambda z: 1 / (1 + torch.exp(-z[:, 0:1])))


def test_a_sigmoid_in_float32_for_float64_inputs_fails():
    fails(lesson01.check_sigmoid, lambda z: (1 / (1 + torch.exp(-z))).float(), "placement", "right values but is float32",
          "float64")


@pytest.mark.parametrize("library, said", [
    (torch.sigmoid, "torch's own sigmoid"),
    (lambda z: torch.special.expit(z), "torch's own sigmoid"),
    (lambda z: torch.nn.Sigmoid()(z), "torch's own sigmoid"),
    (lambda z: z.sigmoid(), "torch's own sigmoid"),
    (lambda z: torch.nn.functional.logsigmoid(z).exp(), "log-sigmoid"),
    (lambda z: torch.nn.functional.silu(z) / z, "SiLU"),
    (lambda z: torch.softmax(torch.stack([z, torch.zeros_like(z)]), dim=0)[0], "softmax"),
])
def test_torchs_own_sigmoid_is_not_writing_it(library, said):
    fails(lesson01.check_sigmoid, library, "library", "`sigmoid` called", said, "write it yourself")


def test_the_gradient_may_use_torchs_sigmoid():
    passes(lesson01.check_dsse_dw, lambda X, y, w: (2 * (torch.sigmoid(X * w).reshape(-1) - y)
                                                     * torch.sigmoid(X * w).reshape(-1)
                                                     * (1 - torch.sigmoid(X * w).reshape(-1)) * X.reshape(-1)).sum())


def test_a_sigmoid_that_overwrites_its_input_fails():
    def in_place(z):
        return z.neg_().exp_().add_(1).reciprocal_()
    fails(lesson01.check_sigmoid, in_place, "changed input", "changed its input `z` in place")


# ---------------------------------------------------------------- SSE and MSE
def test_sse_and_mse_variants_pass():
    passes(lesson01.check_sse, lambda h, y: ((h.reshape(-1) - y) ** 2).sum())
    passes(lesson01.check_sse, lambda h, y: torch.sum(torch.square(h - y[:, None])))
    passes(lesson01.check_sse, lambda h, y: torch.nn.functional.mse_loss(h, y.reshape(-1, 1), reduction="sum"))
    passes(lesson01.check_mse, lambda h, y: ((h - y.reshape(-1, 1)) ** 2).mean())
    passes(lesson01.check_mse, lambda h, y: ((h - y.reshape(-1, 1)) ** 2).sum() / len(y))

    def own_copy_in_place(h, y):
        d = h - y.reshape(-1, 1)
        d.pow_(2)
        return d.sum()
    passes(lesson01.check_sse, own_copy_in_place)


def test_the_broadcasting_trap_is_named():
    message = fails(lesson01.check_sse, lambda h, y: ((h - y) ** 2).sum(), "broadcasting trap",
                    "SSE is wrong (n=7", "y.reshape(-1, 1)")
    assert "broadcasting trap" in message
    fails(lesson01.check_mse, lambda h, y: ((h - y) ** 2).mean(), "broadcasting trap", "MSE is wrong")
    fails(lesson01.check_mse, lambda h, y: ((h - y) ** 2).sum() / len(y), "broadcasting trap", "MSE is wrong")


def test_mse_without_the_division_is_named():
    fails(lesson01.check_mse, sse, "factor", "MSE is wrong (n=7", "divide by N (N = 7")


@pytest.mark.parametrize("wrong", [
    lambda h, y: (h - y.reshape(-1, 1)).abs().sum(),
    lambda h, y: (h - y.reshape(-1, 1)).sum() ** 2,
    lambda h, y: torch.tensor(1.25),
])
def test_other_wrong_sses_fail(wrong):
    with pytest.raises(AssertionError, match="SSE"):
        lesson01.check_sse(wrong)


def test_sse_without_the_sum_fails_on_its_shape():
    with pytest.raises(AssertionError, match="SSE"):
        lesson01.check_sse(lambda h, y: (h - y.reshape(-1, 1)) ** 2)


def test_sse_as_a_python_number_must_be_a_tensor():
    fails(lesson01.check_sse, lambda h, y: sse(h, y).item(), "type", "SSE should be a tensor")


def test_sse_that_keeps_a_dimension_is_told_about_its_shape_not_a_trap():
    message = fails(lesson01.check_sse, lambda h, y: ((h - y.reshape(-1, 1)) ** 2).sum(dim=0, keepdim=True), "shape",
                    "SSE has the right value but shape (1, 1)", "0-dim")
    assert "(N, N)" not in message


def test_an_sse_that_changes_its_input_in_place_fails():
    def in_place(h, y):
        h -= y.reshape(-1, 1)
        return (h ** 2).sum()
    fails(lesson01.check_sse, in_place, "changed input", "changed its input `h` in place", "the caller still needs")


def test_mse_is_graded_with_the_course_sse_so_a_slip_there_costs_only_sse():
    student = namespace("def sse(h, y):\n    return ((h - y) ** 2).sum()\n\n"
                        "def mse(h, y):\n    return sse(h, y) / h.shape[0]\n")
    fails(lesson01.check_sse, student["sse"], "broadcasting trap")
    verdict = passes(lesson01.check_mse, student["mse"])
    assert any("`mse` passed with the course's `sse`" in note for note in verdict.notes), verdict.notes
    assert student["sse"].__name__ == "sse" and student["mse"].__globals__["sse"] is student["sse"]  # put back


def test_mse_that_calls_an_unwritten_sse_still_passes_with_a_note():
    student = namespace("def sse(h, y):\n    raise NotImplementedError\n\n"
                        "def mse(h, y):\n    return sse(h, y) / len(y)\n")
    verdict = passes(lesson01.check_mse, student["mse"])
    assert verdict.notes


# ---------------------------------------------------------------- dSSE/dw
def _dsse_dw(factor=2.0, sign=1.0, times_x=True, trap=False):
    def wrong(X, y, w):
        h = torch.sigmoid(X * w)
        labels = y if trap else y.reshape(-1, 1)
        return (sign * factor * (h - labels) * h * (1 - h) * (X if times_x else 1)).sum()
    return wrong


@pytest.mark.parametrize("wrong, kind, diagnosis", [
    (_dsse_dw(factor=1.0), "factor", "missing factor 2"),
    (_dsse_dw(sign=-1.0), "sign", "wrong sign"),
    (_dsse_dw(times_x=False), "dropped", "the factor X is missing"),  # was "values": the engine names it
    (_dsse_dw(trap=True), "broadcasting trap", "broadcasting trap"),
    (lambda X, y, w: _dsse_dw()(X, y, w) / X.shape[0], "factor", "extra division by N"),
    (lambda X, y, w: torch.tensor(27.4926), "values", "dSSE/dw is wrong"),
])
def test_wrong_derivatives_fail_with_their_diagnosis(wrong, kind, diagnosis):
    fails(lesson01.check_dsse_dw, wrong, kind, diagnosis)


def _dsse_dw_with(local):
    """dsse_dw with the per-observation factor after 2(h − y) replaced: local(X, y, h, z) for a column of terms."""
    def wrong(X, y, w):
        z = X * w
        h = torch.sigmoid(z)
        return local(X, y.reshape(-1, 1), h, z).sum()
    return wrong


# The formula mistakes the diagnosis names (gradlab.variants, from the computation the check declares), in the
# student's notation, with the fix; each is the same on every case tried.
NAMED = [
    (_dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * z * (1 - z) * X), "wrong_point",
     "it computes z·(1 − z): that is σ' written for the output σ, applied to the input z. Fix: use ∂SSE/∂h · h · (1 − h)"),
    (_dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * torch.sigmoid(h) * (1 - torch.sigmoid(h)) * X), "wrong_point",
     "evaluates σ' at h = σ(z), so the sigmoid is applied twice"),
    (_dsse_dw_with(lambda X, y, h, z: 2 * h * h * (1 - h) * X), "error_term",
     "it uses the prediction h where the error h − y belongs"),
    (_dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * h * X), "sigmoid_part", "by σ(z) only"),
    (_dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * (1 - h) * X), "sigmoid_part", "by 1 − σ(z) only"),
    (_dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * (h * (1 - h)) ** 2 * X), "twice", "σ'(z) is applied twice"),
    (_dsse_dw_with(lambda X, y, h, z: (h - y) ** 2 * h * (1 - h) * X), "loss_for_grad", "the loss itself"),
]


@pytest.mark.parametrize("wrong, kind, needle", NAMED, ids=[k for _, k, _ in NAMED])
def test_formula_mistakes_are_named_from_an_informative_case_with_the_graph_attached(wrong, kind, needle):
    err, verdict = both(lesson01.check_dsse_dw, wrong)
    message = str(err)
    assert err.kind == verdict.kind == kind, message
    assert needle in message.splitlines()[0] and "Fix:" in message.splitlines()[0], message
    assert "(n=64," in message.splitlines()[0] and "(the same on all" in message  # not the n = 1 case
    # the grader's verdict carries the backward pass drawn, the node where the slip is marked
    assert verdict.figure and verdict.figure.startswith("<?xml") and "first wrong" in verdict.figure
    assert "∂SSE/∂z" in verdict.figure or "∂SSE/∂h" in verdict.figure


UNRELATED = [  # wrong, but no usual slip fits every case: the message must not name one
    _dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * (1 - torch.tanh(z) ** 2) * X),
    _dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * h * (1 - h) * X + 0.01 * X ** 3),
    _dsse_dw_with(lambda X, y, h, z: 2 * (h - y) * torch.sigmoid(z + 1) * (1 - torch.sigmoid(z + 1)) * X),
    _dsse_dw_with(lambda X, y, h, z: 3 * (h - y) * z * (1 - z) * X),  # two slips at once
]


@pytest.mark.parametrize("wrong", UNRELATED)
def test_unrelated_mistakes_are_not_given_a_formula_name(wrong):
    from gradlab.variants import KINDS

    err, verdict = both(lesson01.check_dsse_dw, wrong)
    assert err is not None and err.kind not in KINDS and "Fix:" not in str(err), str(err)
    assert verdict.figure is None  # nothing to mark: a drawing would only repeat the message


def test_a_derivative_of_shape_1_by_1_is_told_its_shape_not_a_trap():
    def keepdim(X, y, w):
        h = torch.sigmoid(X * w)
        return (2 * (h - y.reshape(-1, 1)) * h * (1 - h) * X).sum(dim=0, keepdim=True)

    def matrix_form(X, y, w):  # Xᵀ·(error term): a (1, 1) matrix
        h = torch.sigmoid(X * w)
        return X.T @ (2 * (h - y.reshape(-1, 1)) * h * (1 - h))

    for fn in (keepdim, matrix_form):
        message = fails(lesson01.check_dsse_dw, fn, "shape", "dSSE/dw has the right value but shape (1, 1)",
                        "0-dim tensor", ".reshape(())")
        assert "(N, N)" not in message and "trap" not in message
    message = fails(lesson01.check_dsse_dw, lambda X, y, w: _dsse_dw(factor=1.0)(X, y, w).reshape(1, 1), "factor",
                    "missing factor 2", "its shape is (1, 1), not ()")
    assert "(N, N)" not in message


def _sse_of(X, y, w):
    return ((torch.sigmoid(X * w) - y.reshape(-1, 1)) ** 2).sum()


def _backward(X, y, w):
    w = w.detach().clone().requires_grad_()
    _sse_of(X, y, w).backward()
    return w.grad


def _autograd_grad(X, y, w):
    w = w.detach().clone().requires_grad_(True)
    return torch.autograd.grad(_sse_of(X, y, w), w)[0]


SAVED_GRAD = torch.autograd.grad  # a reference saved before any guard was there


def _saved_reference(X, y, w):
    w = w.detach().clone()
    w.requires_grad = True
    return SAVED_GRAD(_sse_of(X, y, w), w)[0]


def _factory(X, y, w):
    w = torch.tensor(float(w), dtype=X.dtype, device=X.device, requires_grad=True)
    _sse_of(X, y, w).backward()
    return w.grad


def _parameter(X, y, w):
    p = torch.nn.Parameter(w.detach().clone())
    return SAVED_GRAD(_sse_of(X, y, p), p)[0]


def _func_grad(X, y, w):
    return torch.func.grad(lambda w_: _sse_of(X, y, w_))(w)


def _hidden_in_try(X, y, w):
    try:
        with torch.enable_grad():
            return _backward(X, y, w)
    except BaseException:  # noqa: B036 -- a student who catches everything still fails
        return _dsse_dw()(X, y, w)


@pytest.mark.parametrize("fn", [_backward, _autograd_grad, _saved_reference, _factory, _parameter, _func_grad,
                                _hidden_in_try])
def test_autograd_fails_the_hand_derivative(fn):
    fails(lesson01.check_dsse_dw, fn, "autograd", "`dsse_dw` used autograd", "derived by hand")


def test_unusual_right_derivatives_pass():
    def with_helpers_and_where(X, y, w):
        h = torch.where(X * w >= 0, 1 / (1 + torch.exp(-X * w)), torch.exp(X * w) / (1 + torch.exp(X * w)))
        return torch.sum(2 * (h - y[:, None]) * h * (1 - h) * X)

    def own_copy_in_place(X, y, w):
        h = torch.sigmoid(X * w)
        e = h.clone()
        e.sub_(y.reshape(-1, 1)).mul_(2).mul_(h).mul_(1 - h).mul_(X)
        return e.sum()

    def device_agnostic(X, y, w):
        two = torch.full_like(X, 2.0)
        h = 1 / (torch.ones_like(X) + torch.exp(-X * w))
        return (two * (h - y.reshape(-1, 1)) * h * (1 - h) * X).sum()

    def matrix_form(X, y, w):
        h = torch.sigmoid(X * w)
        return (X.T @ (2 * (h - y.reshape(-1, 1)) * h * (1 - h))).reshape(())

    def float64_inside(X, y, w):
        return _dsse_dw()(X.double(), y.double(), w.double()).to(X.dtype)

    for fn in (with_helpers_and_where, own_copy_in_place, device_agnostic, matrix_form, float64_inside):
        passes(lesson01.check_dsse_dw, fn)


def test_dsse_dw_is_graded_with_the_course_sigmoid_and_linear():
    student = namespace(
        "def linear(X, w, b=0.0):\n    return X * w + b\n\n"
        "def sigmoid(z):\n    return 1 / (1 + torch.exp(z))\n\n"  # wrong sign: costs the sigmoid cell only
        "def dsse_dw(X, y, w):\n    h = sigmoid(linear(X, w))\n"
        "    return (2 * (h - y.reshape(-1, 1)) * h * (1 - h) * X).sum()\n")
    fails(lesson01.check_sigmoid, student["sigmoid"], "values")
    verdict = passes(lesson01.check_dsse_dw, student["dsse_dw"])
    assert any("`sigmoid` and `linear` in its place" in note for note in verdict.notes), verdict.notes
    assert student["sigmoid"](torch.tensor(0.0)) == 0.5 and student["dsse_dw"].__globals__["sigmoid"] is student["sigmoid"]


def test_a_derivative_that_changes_its_input_fails():
    def in_place(X, y, w):
        y.unsqueeze_(1)
        return _dsse_dw()(X, y.reshape(-1), w)
    fails(lesson01.check_dsse_dw, in_place, "changed input", "changed its input `y` in place")


@pytest.mark.parametrize("wrong", [
    lambda h, y: ((h - y.reshape(-1, 1)) ** 2).sum() / (2 * len(y)),
    lambda h, y: 0.5 * ((h - y.reshape(-1, 1)) ** 2).mean(),
])
def test_a_halved_loss_is_worded_as_a_value_not_a_derivative(wrong):
    message = fails(lesson01.check_mse, wrong, "factor", "½ × the expected one", "a ½, or a division by 2, too many?")
    assert "derivative" not in message and "chain rule" not in message, message


def test_wrong_values_of_a_layer_say_nothing_of_the_chain_rule():
    for check, wrong in ((lesson01.check_sigmoid, lambda z: 1 / (1 + torch.exp(z))),
                         (lesson01.check_linear, lambda X, w, b=0.0: X * w - b)):
        message = fails(check, wrong, "values", "the values differ from the expected ones")
        assert "chain rule" not in message and "gradient" not in message, message
