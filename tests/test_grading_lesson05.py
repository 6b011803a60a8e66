"""The hidden checks of lesson 5 pass the lesson's solutions and every valid variant a docstring allows, fail each
class of mistake with a message that names it, cost one cell per mistake, and agree both ways the grader runs
them (locally, and recorded in the kernel then replayed: tests/grading_modes.py)."""
import contextlib
import io

import pytest
import torch
import torch.nn.functional as F

from course import solution_namespace
from grading_modes import both
from gradlab.grading import lesson05
from gradlab.variants import KINDS

NOTEBOOK = "05-matrix-backprop/matrix-backprop.ipynb"
SOLUTIONS = solution_namespace(NOTEBOOK)
NAMES = ("linear_forward", "linear_backward", "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
         "two_layer_loss_and_grads")
linear_forward, linear_backward, relu_forward, relu_backward, sigmoid_forward, sigmoid_backward, two_layer = (
    SOLUTIONS[n] for n in NAMES)


def passes(check, *args):
    err, verdict = both(check, *args)
    assert err is None, err
    return verdict


def fails(check, *args, kind=None, needles=()):
    """The check fails both ways, with this kind (when given) and a message holding every needle."""
    err, verdict = both(check, *args)
    assert err is not None, "the check passed"
    message = str(err)
    if kind is not None:
        assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert needle in message, message
    return message


def notebook(source="", **replace):
    """The lesson's solutions in one namespace, as in a student's notebook, with some functions replaced by the
    definitions in ``source``: the composite then calls them by name."""
    ns = solution_namespace(NOTEBOOK)
    ns["F"] = F
    exec(source, ns)
    ns.update(replace)
    return ns


def every_check(ns):
    return [
        (lesson05.check_linear_forward, ns["linear_forward"]),
        (lesson05.check_linear_backward, ns["linear_forward"], ns["linear_backward"], "dx"),
        (lesson05.check_linear_backward, ns["linear_forward"], ns["linear_backward"], "dW"),
        (lesson05.check_linear_backward, ns["linear_forward"], ns["linear_backward"], "db"),
        (lesson05.check_relu_forward, ns["relu_forward"]),
        (lesson05.check_relu_backward, ns["relu_forward"], ns["relu_backward"]),
        (lesson05.check_sigmoid_forward, ns["sigmoid_forward"]),
        (lesson05.check_sigmoid_backward, ns["sigmoid_forward"], ns["sigmoid_backward"]),
        (lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"]),
    ]


def test_the_lesson_solutions_pass_both_ways_without_notes():
    for check, *args in every_check(SOLUTIONS):
        verdict = passes(check, *args)
        assert not verdict.notes, verdict.notes


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError("Replace this line with your solution")
    fails(lesson05.check_linear_forward, stub, kind="not written", needles=["`linear_forward` is not written yet"])
    fails(lesson05.check_relu_backward, relu_forward, stub, kind="not written", needles=["`relu_backward` is not written"])
    fails(lesson05.check_two_layer_loss_and_grads, stub, kind="not written", needles=["not written yet"])


# ---------------------------------------------------------------- valid variants
def test_forward_variants_pass():
    for fn in (lambda x: (torch.relu(x), x), lambda x: (torch.where(x > 0, x, 0), x), lambda x: (x * (x > 0), x),
               lambda x: (torch.maximum(x, torch.zeros_like(x)), x), lambda x: (F.relu(x), x.clone())):
        passes(lesson05.check_relu_forward, fn)

    def relu_in_place_on_own_copy(x):
        out = x.clone()
        out[out < 0] = 0
        return out, x
    passes(lesson05.check_relu_forward, relu_in_place_on_own_copy)
    passes(lesson05.check_sigmoid_forward, lambda x: (torch.sigmoid(x), torch.sigmoid(x)))
    passes(lesson05.check_sigmoid_forward, lambda x: (torch.exp(x) / (1 + torch.exp(x)).clamp(max=float("inf")), x))
    passes(lesson05.check_linear_forward, lambda x, W, b: (torch.einsum("nk,kj->nj", x, W) + b, (x, W, b)))
    passes(lesson05.check_linear_forward, lambda x, W, b: (F.linear(x, W.T, b), None))


def test_backward_variants_pass():
    def linear_einsum(dout, cache):
        x, W, b = cache
        return torch.einsum("nj,kj->nk", dout, W), torch.einsum("nk,nj->kj", x, dout), torch.ones_like(dout[:, 0]) @ dout

    def linear_as_list(dout, cache):
        x, W, _ = cache
        return [dout @ W.T, x.T @ dout, dout.sum(dim=0)]

    for which in ("dx", "dW", "db"):
        passes(lesson05.check_linear_backward, linear_forward, linear_einsum, which)
        passes(lesson05.check_linear_backward, linear_forward, linear_as_list, which)

    def relu_index_on_own_copy(dout, cache):
        dx = dout.clone()
        dx[cache <= 0] = 0
        return dx

    for fn in (lambda dout, x: torch.where(x > 0, dout, 0), lambda dout, x: dout.masked_fill(x <= 0, 0),
               lambda dout, x: dout * (x > 0).to(dout.dtype), relu_index_on_own_copy,
               lambda dout, x: dout * torch.heaviside(x, torch.zeros_like(x))):
        passes(lesson05.check_relu_backward, relu_forward, fn)
    for fn in (lambda dout, s: dout * s - dout * s**2, lambda dout, s: dout * s * (1 - s),
               lambda dout, s: torch.mul(dout, s.mul(1 - s))):
        passes(lesson05.check_sigmoid_backward, sigmoid_forward, fn)


def test_a_backward_for_the_students_own_cache_passes_with_a_note():
    def sigmoid_forward_caching_x(x):
        return torch.sigmoid(x), x

    def sigmoid_backward_from_x(dout, x):
        s = 1 / (1 + torch.exp(-x))
        return dout * s * (1 - s)
    verdict = passes(lesson05.check_sigmoid_backward, sigmoid_forward_caching_x, sigmoid_backward_from_x)
    assert verdict.notes == [verdict.notes[0]] and "the lesson's cache, out = σ(x)" in verdict.notes[0], verdict.notes

    def relu_forward_caching_the_mask(x):
        return torch.relu(x), x > 0
    verdict = passes(lesson05.check_relu_backward, relu_forward_caching_the_mask, lambda dout, mask: dout * mask)
    assert verdict.notes


def test_a_backward_cell_does_not_depend_on_the_forward():
    """One slip, one cell: a wrong or unwritten forward leaves the backward's cell alone."""
    def stub(*args):
        raise NotImplementedError

    def wrong_linear_forward(x, W, b):
        return x @ W, (x, W, b)
    for which in ("dx", "dW", "db"):
        passes(lesson05.check_linear_backward, stub, linear_backward, which)
        passes(lesson05.check_linear_backward, wrong_linear_forward, linear_backward, which)
    passes(lesson05.check_relu_backward, lambda x: (x, x), relu_backward)
    passes(lesson05.check_sigmoid_backward, lambda x: (torch.exp(x), torch.sigmoid(x) + 1), sigmoid_backward)
    passes(lesson05.check_sigmoid_backward, stub, sigmoid_backward)


# ---------------------------------------------------------------- autograd is not a derivation by hand
AUTOGRAD_SIGMOID_BACKWARDS = {
    ".backward()": """
def sigmoid_backward(dout, cache):
    x = torch.logit(cache).requires_grad_()
    (torch.sigmoid(x) * dout).sum().backward()
    return x.grad
""",
    "torch.autograd.grad": """
def sigmoid_backward(dout, cache):
    x = torch.logit(cache).detach().requires_grad_(True)
    return torch.autograd.grad((torch.sigmoid(x) * dout).sum(), x)[0]
""",
    "a saved reference": """
from torch.autograd import grad as saved_grad
def sigmoid_backward(dout, cache):
    x = torch.tensor(torch.logit(cache).tolist(), dtype=cache.dtype, device=cache.device, requires_grad=True)
    return saved_grad((torch.sigmoid(x) * dout).sum(), [x])[0]
""",
    "nn.Parameter": """
def sigmoid_backward(dout, cache):
    x = torch.nn.Parameter(torch.logit(cache))
    (torch.sigmoid(x) * dout).sum().backward()
    return x.grad.detach()
""",
    "torch.func.grad": """
def sigmoid_backward(dout, cache):
    return torch.func.grad(lambda x: (torch.sigmoid(x) * dout).sum())(torch.logit(cache))
""",
    "torch.func.vjp": """
def sigmoid_backward(dout, cache):
    return torch.func.vjp(torch.sigmoid, torch.logit(cache))[1](dout)[0]
""",
}


@pytest.mark.parametrize("how", list(AUTOGRAD_SIGMOID_BACKWARDS))
def test_autograd_in_a_layer_backward_fails(how):
    fn = notebook(AUTOGRAD_SIGMOID_BACKWARDS[how])["sigmoid_backward"]
    fails(lesson05.check_sigmoid_backward, sigmoid_forward, fn, kind="autograd",
          needles=["`sigmoid_backward` used autograd", "derived by hand"])


def test_autograd_in_the_other_backwards_fails():
    ns = notebook("""
def linear_backward(dout, cache):
    x, W, b = (t.detach().requires_grad_() for t in cache)
    ((x @ W + b) * dout).sum().backward()
    return x.grad, W.grad, b.grad

def relu_backward(dout, cache):
    x = cache.detach().requires_grad_()
    return torch.autograd.grad((torch.relu(x) * dout).sum(), x)[0]
""")
    for which in ("dx", "dW", "db"):
        fails(lesson05.check_linear_backward, linear_forward, ns["linear_backward"], which, kind="autograd",
              needles=["`linear_backward` used autograd"])
    fails(lesson05.check_relu_backward, relu_forward, ns["relu_backward"], kind="autograd",
          needles=["`relu_backward` used autograd"])


def test_autograd_in_the_two_layer_network_fails():
    ns = notebook("""
def two_layer_loss_and_grads(X, y, params):
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    p = torch.sigmoid(torch.relu(X @ leaves["W1"] + leaves["b1"]) @ leaves["W2"] + leaves["b2"])
    loss = ((p - y) ** 2).mean()
    loss.backward()
    return loss.detach(), {k: v.grad for k, v in leaves.items()}
""")
    message = fails(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"], kind="autograd",
                    needles=["`two_layer_loss_and_grads` used autograd"])
    assert "in `two_layer_loss_and_grads` itself" in message


def test_a_layer_that_uses_autograd_costs_its_own_cell_only():
    ns = notebook(AUTOGRAD_SIGMOID_BACKWARDS[".backward()"])
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"])
    assert any("your sigmoid layer" in note and "uses autograd" in note for note in verdict.notes), verdict.notes


# ---------------------------------------------------------------- inputs changed in place
def test_a_backward_that_changes_dout_in_place_fails_naming_dout():
    def zeroes_dout(dout, cache):
        x, W, b = cache
        grads = dout @ W.T, x.T @ dout, dout.sum(dim=0)
        dout.zero_()
        return grads

    def doubles_dout(dout, cache):
        dout *= 2
        return dout * (cache > 0) / 2

    def masks_dout_in_place(dout, cache):
        dout[cache <= 0] = 0
        return dout
    for which in ("dx", "dW", "db"):
        fails(lesson05.check_linear_backward, linear_forward, zeroes_dout, which, kind="changed input",
              needles=["`linear_backward` changed its input `dout` in place"])
    fails(lesson05.check_relu_backward, relu_forward, doubles_dout, kind="changed input", needles=["`dout`"])
    fails(lesson05.check_relu_backward, relu_forward, masks_dout_in_place, kind="changed input", needles=["`dout`"])

    def sigmoid_backward_in_place(dout, cache):
        return dout.mul_(cache * (1 - cache))
    fails(lesson05.check_sigmoid_backward, sigmoid_forward, sigmoid_backward_in_place, kind="changed input",
          needles=["`dout`"])


def test_changing_the_cache_or_the_input_in_place_fails():
    def scales_W(dout, cache):
        x, W, b = cache
        W.mul_(1.0)
        W.add_(1.0)
        return dout @ (W - 1).T, x.T @ dout, dout.sum(0)
    fails(lesson05.check_linear_backward, linear_forward, scales_W, "dx", kind="changed input", needles=["`cache[1]`"])
    fails(lesson05.check_relu_forward, lambda x: (x.clamp_(min=0), x), kind="changed input", needles=["`x`"])

    def two_layer_updating_params(X, y, params):
        loss, grads = two_layer(X, y, params)
        params["W1"] -= grads["W1"]
        return loss, grads
    ns = notebook(two_layer_updating_params=two_layer_updating_params)
    fails(lesson05.check_two_layer_loss_and_grads, ns["two_layer_updating_params"], kind="changed input",
          needles=["`params['W1']`"])


# ---------------------------------------------------------------- holes that kind inputs left open
def test_relu_slope_at_zero_is_torch_relus():
    """x holds exact zeros in every case: a mask x >= 0 (or clamp's autograd slope 1 at 0) is named."""
    # kind "known slip" before the diagnosis (gradlab.variants) named it: now the engine's kind, from n = 64
    message = fails(lesson05.check_relu_backward, relu_forward, lambda d, x: d * (x >= 0), kind="mask_at_zero")
    assert "exactly 0" in message and "x > 0" in message and "(n=64" in message.splitlines()[0]


def test_degenerate_sizes_catch_squeezing():
    def squeezed_db(dout, cache):
        x, W, b = cache
        return dout @ W.T, x.T @ dout, dout.sum(0).squeeze()  # a bias of one neuron loses its dimension

    def squeezed_dx(dout, cache):
        x, W, b = cache
        return (dout @ W.T).squeeze(), x.T @ dout, dout.sum(0)  # one example, or one input, loses a dimension
    fails(lesson05.check_linear_backward, linear_forward, squeezed_db, "db", needles=["db"])
    fails(lesson05.check_linear_backward, linear_forward, squeezed_dx, "dx", needles=["dx"])

    def forward_for_one_example_only(x, W, b):
        return (x.squeeze(0) @ W + b).reshape(len(x), -1), (x, W, b)
    passes(lesson05.check_linear_forward, forward_for_one_example_only)  # valid: reshape puts the rows back


def test_float32_results_for_float64_inputs_fail():
    fails(lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: (d * s * (1 - s)).float(),
          kind="placement", needles=["right values", "float32"])
    fails(lesson05.check_relu_forward, lambda x: (torch.relu(x).float(), x), kind="placement", needles=["float32"])

    def two_layer_float32(X, y, params):
        loss, grads = two_layer(X, y, params)
        return loss, {k: v.float() for k, v in grads.items()}
    fails(lesson05.check_two_layer_loss_and_grads, two_layer_float32, kind="placement", needles=["float32"])


@pytest.mark.parametrize("which, wrong, hint", [
    ("dW", lambda d, c: (d @ c[1].T, d.T @ c[0], d.sum(0)), "transpose"),
    ("db", lambda d, c: (d @ c[1].T, c[0].T @ d, d.mean(0)), "division by N"),
    ("dx", lambda d, c: (-(d @ c[1].T), c[0].T @ d, d.sum(0)), "wrong sign"),
    ("db", lambda d, c: (d @ c[1].T, c[0].T @ d, d.sum(1)), "db"),
    # W for Wᵀ: it used to fail on the first (square) case with "the values are different"; every case is tried
    # first now, and the crash on a non-square W says what is wrong with the product
    ("dx", lambda d, c: (d @ c[1], c[0].T @ d, d.sum(0)), "shapes cannot be multiplied"),
])
def test_wrong_linear_gradients_fail_with_a_diagnosis(which, wrong, hint):
    fails(lesson05.check_linear_backward, linear_forward, wrong, which, needles=[hint])


def test_each_linear_gradient_is_graded_on_its_own():
    right_dx_wrong_dW = lambda d, c: (d @ c[1].T, 2 * c[0].T @ d, d.sum(0))  # noqa: E731
    passes(lesson05.check_linear_backward, linear_forward, right_dx_wrong_dW, "dx")
    passes(lesson05.check_linear_backward, linear_forward, right_dx_wrong_dW, "db")
    fails(lesson05.check_linear_backward, linear_forward, right_dx_wrong_dW, "dW", kind="factor", needles=["dW is wrong"])


def test_linear_backward_must_return_three_gradients():
    fails(lesson05.check_linear_backward, linear_forward, lambda d, c: (d @ c[1].T, c[0].T @ d), "dx",
          kind="not a tuple", needles=["three gradients (dx, dW, db)", "length 2"])


def test_forward_must_return_out_and_cache():
    fails(lesson05.check_linear_forward, lambda x, W, b: x @ W + b, kind="not a pair",
          needles=["should return a pair (out, cache)"])
    fails(lesson05.check_linear_forward, lambda x, W, b: (x @ W, None), needles=["linear_forward output is wrong"])


# kinds "known slip" (from a list of the check's own sentences, at n = 1) before the diagnosis (gradlab.variants)
# named them from the computation the check declares: now the engine's kinds and words, from n = 64
@pytest.mark.parametrize("wrong, kind, hint", [
    (lambda d, x: (x > 0).to(d.dtype), "no_upstream", "it is the mask (x > 0) alone, not multiplied by the upstream "
                                                      "gradient dout"),
    (lambda d, x: d * torch.relu(x), "relu_slope", "it multiplies dout by x where x > 0, but ReLU's slope there is 1"),
])
def test_relu_backward_slips_are_named(wrong, kind, hint):
    message = fails(lesson05.check_relu_backward, relu_forward, wrong, kind=kind, needles=[hint, "Fix:"])
    assert "(n=64" in message.splitlines()[0]


@pytest.mark.parametrize("wrong, kind, needles", [
    (lambda d, x: x > 0, "no_upstream", ["dx is a bool tensor", "that is a mask", "multiply the upstream gradient dout"]),
    (lambda d, x: (x > 0).long(), "type", ["dx holds int64 values", "a gradient holds real numbers"]),
    (lambda d, x: (d * (x > 0)).to(torch.int32), "type", ["dx holds int32 values"]),
])
def test_a_relu_backward_returning_a_mask_is_told_so_never_a_crash(wrong, kind, needles):
    """The mask itself (bool, or integers) is no gradient: said plainly, not a RuntimeError from the diagnosis."""
    fails(lesson05.check_relu_backward, relu_forward, wrong, kind=kind, needles=needles)


def test_a_bool_gradient_of_another_layer_fails_without_a_crash():
    def bool_dW(dout, cache):
        x, W, b = cache
        return dout @ W.T, (x.T @ dout) > 0, dout.sum(0)
    fails(lesson05.check_linear_backward, linear_forward, bool_dW, "dW", needles=["dW is wrong"])


@pytest.mark.parametrize("wrong, kind, hint", [
    (lambda d, s: s * (1 - s), "no_upstream", "the local derivative σ'(x) alone, not multiplied by the upstream "
                                              "gradient dout"),
    (lambda d, s: d * s, "sigmoid_part", "σ(x)·(1 − σ(x))"),
    (lambda d, s: d * torch.sigmoid(s) * (1 - torch.sigmoid(s)), "wrong_point", "out is already σ(x)"),
])
def test_sigmoid_backward_slips_are_named(wrong, kind, hint):
    message = fails(lesson05.check_sigmoid_backward, sigmoid_forward, wrong, kind=kind, needles=[hint, "Fix:"])
    assert "(n=64" in message.splitlines()[0]


def test_a_hard_coded_gradient_fails():
    fails(lesson05.check_relu_backward, relu_forward, lambda d, x: torch.tensor([[0.0, 0.0, 30.0]]), needles=["dx"])


def test_finite_differences_run_as_a_third_opinion(monkeypatch):
    calls = []
    real = lesson05.numerical_grads

    def spy(fn, *inputs):
        calls.append(tuple(x.dtype for x in inputs))
        return real(fn, *inputs)
    monkeypatch.setattr(lesson05, "numerical_grads", spy)
    lesson05.check_linear_backward(linear_forward, linear_backward, "dW")
    lesson05.check_relu_backward(relu_forward, relu_backward)
    assert len(calls) >= 4 and all(d == torch.float64 for dtypes in calls for d in dtypes)


# ---------------------------------------------------------------- the two-layer network: one slip, one cell
WRONG_LAYERS = {
    "linear": """
def linear_backward(dout, cache):
    x, W, b = cache
    return dout @ W.T, 2 * x.T @ dout, dout.sum(dim=0)
""",
    "relu": """
def relu_backward(dout, cache):
    return dout * (cache >= 0) + 1e-3
""",
    "sigmoid": """
def sigmoid_forward(x):
    return torch.sigmoid(x), x
def sigmoid_backward(dout, cache):
    return dout * cache
""",
}


@pytest.mark.parametrize("layer", list(WRONG_LAYERS))
def test_a_wrong_layer_costs_its_own_cell_not_the_networks(layer):
    ns = notebook(WRONG_LAYERS[layer])
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"])
    assert len(verdict.notes) == 1, verdict.notes
    note = verdict.notes[0]
    assert "only with the lesson's layer functions in place of yours" in note
    assert f"your {layer} layer" in note and all(f"your {other} layer" not in note for other in WRONG_LAYERS if other != layer)


def test_two_wrong_layers_are_both_named():
    ns = notebook(WRONG_LAYERS["linear"] + WRONG_LAYERS["relu"])
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"])
    assert "your linear layer" in verdict.notes[0] and "your relu layer" in verdict.notes[0]


def test_unwritten_layers_do_not_cost_the_network():
    ns = notebook("""
def relu_backward(dout, cache):
    raise NotImplementedError
""")
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"])
    assert "your relu layer" in verdict.notes[0] and "not written yet" in verdict.notes[0]


def test_a_network_that_builds_its_own_caches_and_calls_no_forward_passes():
    ns = notebook("""
def two_layer_inline(X, y, params):
    z1 = X @ params["W1"] + params["b1"]
    a1 = torch.where(z1 > 0, z1, 0)
    p = 1 / (1 + torch.exp(-(a1 @ params["W2"] + params["b2"])))
    dz2 = sigmoid_backward(2 * (p - y) / y.shape[0], p)
    da1, dW2, db2 = linear_backward(dz2, (a1, params["W2"], params["b2"]))
    _, dW1, db1 = linear_backward(relu_backward(da1, z1), (X, params["W1"], params["b1"]))
    return ((p - y) ** 2).mean().item(), {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
""")
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_inline"])
    assert not verdict.notes


def _two_layer_source():
    import nbformat

    from course import NOTEBOOKS
    nb = nbformat.read(NOTEBOOKS / NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "two_layer_loss_and_grads"]
    return cell.source


@pytest.mark.parametrize("right, wrong, needle", [
    ("dp = 2 * (p - y) / len(y)", "dp = 2 * (p - y)", "dJ/d"),  # the 1/N of the mean is missing
    ("dp = 2 * (p - y) / len(y)", "dp = (p - y) / len(y)", "dJ/d"),  # the 2 of the square is missing
    ("loss = ((p - y) ** 2).mean()", "loss = ((p - y) ** 2).sum()", "loss is wrong"),
])
def test_a_mistake_in_the_network_itself_costs_its_cell(right, wrong, needle):
    source = _two_layer_source()
    assert right in source
    ns = notebook(source.replace(right, wrong))
    message = fails(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"], needles=[needle])
    assert "so the mistake is in `two_layer_loss_and_grads` itself" in message


def test_two_layer_results_of_the_wrong_form_fail():
    def no_b2(X, y, params):
        loss, grads = two_layer(X, y, params)
        del grads["b2"]
        return loss, grads
    fails(lesson05.check_two_layer_loss_and_grads, no_b2, kind="missing key", needles=["no entry for ['b2']"])
    fails(lesson05.check_two_layer_loss_and_grads, lambda X, y, p: two_layer(X, y, p)[1], kind="not a pair",
          needles=["(loss, grads) with grads a dict"])


def test_a_loss_as_a_python_float_is_accepted():
    passes(lesson05.check_two_layer_loss_and_grads, lambda X, y, p: (two_layer(X, y, p)[0].item(), two_layer(X, y, p)[1]))


def test_no_hand_formula_in_readable_form():
    """Students can read the module: the gradients it expects come from autograd, never from the formulas asked for."""
    import inspect
    source = inspect.getsource(lesson05)
    for formula in ("@ W.T", "W.T", ".T @", "sum(dim=0)", "sum(0)", "* (1 -", "(1 - s", "x > 0)", "(x > 0", "2 * (p - y)"):
        assert formula not in source, formula


def test_pytorchs_own_backward_kernels_are_not_a_derivation_by_hand():
    with pytest.raises(AssertionError, match="autograd|by hand"):
        lesson05.check_sigmoid_backward(sigmoid_forward, lambda dout, out: torch.ops.aten.sigmoid_backward(dout, out))
    with pytest.raises(AssertionError, match="autograd|by hand"):
        lesson05.check_relu_backward(relu_forward, lambda dout, x: torch.ops.aten.threshold_backward(dout, x, 0))


# ---------------------------------------------------------------- the diagnosis (issue 15): from every case tried
σ = torch.sigmoid


def diagnosed(check, *args):
    """(message, replayed verdict) of a check that fails the same way both ways."""
    err, verdict = both(check, *args)
    assert err is not None, "the check passed"
    return str(err), verdict


def _dW_loop_overwrites(dout, cache):
    x, W, b = cache
    dW = torch.zeros_like(W)
    for i in range(len(x)):
        dW = torch.outer(x[i], dout[i])  # `=` where `+=` belongs
    return dout @ W.T, dW, dout.sum(0)


NAMED_LAYER_SLIPS = [
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d.clone(), "mask_missing",
     "the ReLU mask is missing: dx should be 0 wherever x ≤ 0. Fix: multiply dout by the mask (x > 0)."),
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d * (d > 0), "mask_upstream",
     "the mask comes from the sign of the upstream gradient dout; it must come from the forward input x"),
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d * (x <= 0), "mask_inverted", "the mask is inverted"),
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d * σ(x) * (1 - σ(x)), "other_activation",
     "it uses the sigmoid's derivative σ'(x); ReLU's derivative is 1 where x > 0"),
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: d.clone(), "dropped",
     "the sigmoid's local derivative σ'(x) is missing: dx equals dout. Fix: multiply dout by σ'(x) = out · (1 − out)."),
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: d * (s * (1 - s)) ** 2, "twice",
     "σ'(x) is applied twice"),
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: d * (1 - s), "sigmoid_part",
     "it multiplies dout by 1 − σ(x) only"),
]


@pytest.mark.parametrize("check, forward, wrong, kind, needle", NAMED_LAYER_SLIPS,
                         ids=[f"{c.__name__}-{k}" for c, _, _, k, _ in NAMED_LAYER_SLIPS])
def test_a_layers_formula_mistake_is_named_from_every_case_with_its_fix_and_picture(check, forward, wrong, kind, needle):
    message, verdict = diagnosed(check, forward, wrong)
    head = message.splitlines()[0]
    assert verdict.kind == kind and needle in message and "Fix:" in head, message
    assert "(n=64" in head and "cases tried" in message.splitlines()[1]
    assert verdict.figure and verdict.figure.startswith("<?xml") and "first wrong" in verdict.figure


@pytest.mark.parametrize("which, wrong, kind, needle", [
    ("dW", _dW_loop_overwrites, "last_term", "as if `=` were used where `+=` belongs in a loop over the batch"),
    ("db", lambda d, c: (d @ c[1].T, c[0].T @ d, (c[0].T @ d).sum(0)), "wrong_factor",
     "it multiplies by the input x, as for W; the bias's local derivative is 1. Fix: db = dout summed over the rows"),
    ("dx", lambda d, c: (d @ (c[0].T @ d).T, c[0].T @ d, d.sum(0)), "wrong_factor",
     "it uses the gradient dW where the weight W belongs"),
])
def test_a_linear_backwards_formula_mistake_is_named_in_its_own_gradients_cell(which, wrong, kind, needle):
    message, verdict = diagnosed(lesson05.check_linear_backward, linear_forward, wrong, which)
    assert verdict.kind == kind and needle in message and message.startswith(f"{which} is wrong"), message
    assert verdict.figure


def test_a_backward_that_ignores_the_forward_values_or_dout_is_found_by_calling_it_again():
    """The probes call the student's backward again through call_student: recorded in the kernel, replayed."""
    message, verdict = diagnosed(lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: σ(1 - σ(d)))
    assert verdict.kind == "wrong_point" and "dx does not depend on x at all" in message
    assert "seen by calling it again with x changed" in message
    message, verdict = diagnosed(lesson05.check_relu_backward, relu_forward, lambda d, x: torch.tanh(x).abs())
    assert verdict.kind == "no_upstream" and "does not change when the upstream gradient dout does" in message


def test_a_relu_backward_wrong_only_at_exact_zeros_is_told_so():
    message, verdict = diagnosed(lesson05.check_relu_backward, relu_forward,
                                 lambda d, x: torch.where(x == 0, 0.5 * d, d * (x > 0)))
    assert verdict.kind == "mask_at_zero" and "wrong only where x is exactly 0" in message, message


UNRELATED_LAYER_MISTAKES = [
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d * (x > 0.5)),
    (lesson05.check_relu_backward, relu_forward, lambda d, x: d * torch.where(x > 0, 1.0, 0.01).to(d.dtype)),
    (lesson05.check_relu_backward, relu_forward, lambda d, x: -d * (d > 0)),  # two slips at once
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: d * (1 - torch.tanh(s) ** 2)),
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: 2 * d * s),  # two slips at once
    (lesson05.check_sigmoid_backward, sigmoid_forward, lambda d, s: d * s * (1 - s) + 1e-3 * d.abs()),
]


@pytest.mark.parametrize("check, forward, wrong", UNRELATED_LAYER_MISTAKES)
def test_a_mistake_that_is_no_usual_slip_is_not_given_one(check, forward, wrong):
    message, verdict = diagnosed(check, forward, wrong)
    assert verdict.kind not in KINDS and "Fix:" not in message and not verdict.figure, message
    assert "(n=1," not in message.splitlines()[0]


def test_a_backward_wrong_with_both_caches_says_so_and_keeps_the_diagnosis():
    def sigmoid_forward_caching_x(x):
        return torch.sigmoid(x), x
    message, verdict = diagnosed(lesson05.check_sigmoid_backward, sigmoid_forward_caching_x, lambda d, c: d.clone())
    assert verdict.kind == "dropped" and "It was called with the lesson's cache, out = σ(x)" in message, message
    assert verdict.figure


def _network_with(right, wrong):
    source = _two_layer_source()
    assert right in source
    return notebook(source.replace(right, wrong))["two_layer_loss_and_grads"]


@pytest.mark.parametrize("right, wrong, kind, needles", [
    ("dz2 = sigmoid_backward(dp, cache4)", "dz2 = dp", "dropped",
     ["dJ/dW2 is wrong (X (64", "the sigmoid's local derivative σ'(z2) is missing: dz2 equals dp. Fix: multiply dp by "
      "σ'(z2) = p · (1 − p).", "The first wrong gradient is dz2 (a step inside your function); da1 (not given), dW2, "
      "db2, dz1 (not given), dW1, db1 are wrong only because of it."]),
    ("dz1 = relu_backward(da1, cache2)", "dz1 = da1", "mask_missing",
     ["the ReLU mask is missing: dz1 should be 0 wherever z1 ≤ 0. Fix: multiply da1 by the mask (z1 > 0).",
      "The first wrong gradient is dz1 (a step inside your function); dW1, db1 are wrong only because of it."]),
    ("da1, dW2, db2 = linear_backward(dz2, cache3)", "_, dW2, db2 = linear_backward(dz2, cache3); da1 = dz2 @ dW2.T",
     "wrong_factor", ["it uses the gradient dW2 where the weight W2 belongs. Fix: da1 = dz2 @ W2ᵀ.",
                      "The first wrong gradient is da1 (a step inside your function)"]),
])
def test_a_slip_inside_the_network_is_placed_at_its_first_wrong_gradient_and_drawn(right, wrong, kind, needles):
    message, verdict = diagnosed(lesson05.check_two_layer_loss_and_grads, _network_with(right, wrong))
    assert verdict.kind == kind, message
    for needle in needles + ["so the mistake is in `two_layer_loss_and_grads` itself"]:
        assert needle in message, message
    assert verdict.figure and 'id="grad-' in verdict.figure and "first wrong" in verdict.figure


def test_an_inline_mask_at_zero_in_the_network_is_named():
    """A dead hidden unit (a zero column of W1 and a zero entry of b1) puts exact zeros in z1 in the cases with n > 1:
    a mask z1 >= 0 written inside the network fails there and is named; z1 > 0 and a1 > 0 pass."""
    message, verdict = diagnosed(lesson05.check_two_layer_loss_and_grads,
                                 _network_with("dz1 = relu_backward(da1, cache2)", "dz1 = da1 * (z1 >= 0)"))
    assert verdict.kind == "mask_at_zero", message
    for needle in ["where z1 is exactly 0 it passes da1 through", "use z1 > 0, not z1 >= 0",
                   "The first wrong gradient is dz1 (a step inside your function)"]:
        assert needle in message, message
    for right in ("dz1 = da1 * (z1 > 0)", "dz1 = da1 * (a1 > 0)"):
        passes(lesson05.check_two_layer_loss_and_grads, _network_with("dz1 = relu_backward(da1, cache2)", right))


def test_a_network_mistake_that_is_no_usual_slip_is_not_given_one():
    wrong = _network_with("dz1 = relu_backward(da1, cache2)", "dz1 = da1 * (1 - torch.tanh(z1) ** 2)")
    message, verdict = diagnosed(lesson05.check_two_layer_loss_and_grads, wrong)
    assert verdict.kind not in KINDS and "Fix:" not in message and not verdict.figure, message


def test_two_slips_in_the_network_are_not_given_one_name():
    source = _two_layer_source()
    source = source.replace("dz2 = sigmoid_backward(dp, cache4)", "dz2 = dp")
    source = source.replace("dz1 = relu_backward(da1, cache2)", "dz1 = da1")
    message, verdict = diagnosed(lesson05.check_two_layer_loss_and_grads, notebook(source)["two_layer_loss_and_grads"])
    assert verdict.kind not in KINDS and "Fix:" not in message, message


@pytest.mark.parametrize("source, first, needle", [
    ("def relu_backward(dout, cache):\n    return dout.clone()\n", "dz1, from your `relu_backward`",
     "the ReLU mask is missing: dz1 should be 0 wherever z1 ≤ 0. Fix: multiply da1 by the mask (z1 > 0). dW1, db1 are "
     "wrong only because of it."),
    ("def sigmoid_backward(dout, cache):\n    return dout * cache\n", "dz2, from your `sigmoid_backward`",
     "it multiplies dp by σ(z2) only"),
    (WRONG_LAYERS["linear"], "dW2, from your `linear_backward`", "every value is 2 × the expected one"),
])
def test_the_note_places_a_wrong_layer_in_the_network_given_the_right_upstream_gradient(source, first, needle):
    """locate with the student's layer functions, every call through call_student: the same note when replayed."""
    ns = notebook(source)
    verdict = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"])
    (note,) = verdict.notes
    assert "each given the right upstream gradient (X (64" in note and "float64" in note, note
    assert f"the first wrong gradient is {first}" in note and needle in note, note
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # run locally, the check prints its note
        lesson05.check_two_layer_loss_and_grads(ns["two_layer_loss_and_grads"])
    assert printed.getvalue().strip() == note


def test_the_note_quotes_the_networks_own_failure_when_each_layer_is_right_given_right_inputs():
    ns = notebook("def relu_forward(x):\n    return x.clone(), x\n")  # a wrong output; the backward's cache is right
    (note,) = passes(lesson05.check_two_layer_loss_and_grads, ns["two_layer_loss_and_grads"]).notes
    assert "with your own, loss is wrong" in note and "your relu layer" in note and "first wrong" not in note, note


def test_the_lesson_draws_the_networks_backward_pass_from_its_own_gradients():
    """lesson05.trace: what the lesson's comparison cell shows."""
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    y = (torch.rand(20, 1, generator=gen) < 0.5).double()
    params = dict(zip(("W1", "b1", "W2", "b2"), (torch.randn(*s, generator=gen, dtype=torch.float64)
                                                 for s in [(4, 3), (3,), (3, 1), (1,)])))
    _, grads = two_layer(X, y, dict(params))
    right = lesson05.trace(X, y, params, grads)
    assert right.ok and right.explain() == "Every gradient given is right." and "<svg" in right._repr_svg_()
    _, wrong = _network_with("dz2 = sigmoid_backward(dp, cache4)", "dz2 = dp")(X, y, dict(params))
    traced = lesson05.trace(X, y, params, wrong)
    assert traced.first == "z2" and traced.diagnosis.kind == "dropped"
    assert "dW2, db2, dz1 (not given), dW1, db1 are wrong only because of it" in traced.explain()
