"""The hidden checks of lesson 5 pass the lesson's solutions and every valid variant a docstring allows, fail each
class of mistake with a message that names it, cost one cell per mistake, and agree both ways the grader runs
them (locally, and recorded in the kernel then replayed: tests/grading_modes.py)."""
import pytest
import torch
import torch.nn.functional as F

from course import solution_namespace
from grading_modes import both
from gradlab.grading import lesson05

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
    message = fails(lesson05.check_relu_backward, relu_forward, lambda d, x: d * (x >= 0), kind="known slip")
    assert "exactly 0" in message and "x > 0" in message


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
    ("dx", lambda d, c: (d @ c[1], c[0].T @ d, d.sum(0)), "dx"),
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


@pytest.mark.parametrize("wrong, hint", [
    (lambda d, x: (x > 0).to(d.dtype), "local derivative alone"),
    (lambda d, x: d * torch.relu(x), "ReLU(x)"),
])
def test_relu_backward_slips_are_named(wrong, hint):
    fails(lesson05.check_relu_backward, relu_forward, wrong, kind="known slip", needles=[hint])


@pytest.mark.parametrize("wrong, hint", [
    (lambda d, s: s * (1 - s), "local derivative alone"),
    (lambda d, s: d * s, "σ(x)·(1 − σ(x))"),
    (lambda d, s: d * torch.sigmoid(s) * (1 - torch.sigmoid(s)), "already is out = σ(x)"),
])
def test_sigmoid_backward_slips_are_named(wrong, hint):
    fails(lesson05.check_sigmoid_backward, sigmoid_forward, wrong, kind="known slip", needles=[hint])


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
