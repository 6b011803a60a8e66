"""gradlab.variants: formula-level diagnosis.

For every kind of formula mistake: wrong answers that must be named as that kind, and right answers (also
written unusually), unrelated mistakes and combined mistakes that must not be named as any formula kind. The
student answers here are written by hand, not taken from the variants' own code, so a wrong variant fails.
"""
import pytest
import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import GradientError, check_grad, compare
from mistakes import exercises as E

SPECS = E.all_specs()
FORMULA_KINDS = {
    "wrong_point", "dropped", "twice", "no_upstream", "sigmoid_part", "relu_slope", "mask_upstream", "mask_missing",
    "mask_inverted", "mask_at_zero", "other_activation", "softmax_axis", "softmax_diag", "onehot_added",
    "onehot_missing", "last_term", "wrong_factor", "stale_input", "error_term", "loss_for_grad", "reg_coeff",
    "penalty_value",
}
σ = torch.sigmoid


def diagnosed(key, student):
    """(kind, message) of the mechanism's check; (None, "") when it passes."""
    spec = SPECS[key]
    try:
        spec.exercise.check(spec.answer({**E.RIGHT[key], **student}), spec.cases)
    except GradientError as err:
        return err.kind, str(err)
    return None, ""


# --------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("key", sorted(SPECS))
def test_node_by_node_backward_is_autograd(key):
    """The pass the variants perturb gives autograd's gradients on every course computation."""
    spec = SPECS[key]
    for label, inputs in spec.cases[:3] + spec.cases[-2:]:
        values = spec.exercise.graph.forward(inputs)
        grads, _ = spec.exercise.graph.backward(values)
        reference = spec.exercise.graph.reference(inputs, spec.exercise.wrt)
        for w in spec.exercise.wrt:
            assert compare(w, grads[w], reference[w], rtol=1e-10, atol=1e-12).ok, (key, label, w)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_the_right_answers_pass(key):
    assert diagnosed(key, {}) == (None, "")


# --------------------------------------------------------------------------- each kind is named
def _l5_linear(db=None, dx=None, dW=None):
    def backward(dout, cache):
        x, W, b = cache
        return (dout @ W.T if dx is None else dx(dout, x, W),
                x.T @ dout if dW is None else dW(dout, x, W),
                dout.sum(0) if db is None else db(dout, x, W))
    return {"linear_backward": backward}


def _dW_loop_overwrites(dout, x, W):
    dW = torch.zeros_like(W)
    for i in range(len(x)):
        dW = torch.outer(x[i], dout[i])  # `=` where `+=` belongs
    return dW


def _dJ_dw(local):
    """lesson 2's ∂J/∂w with the per-observation factor (after 2(h − y)) replaced."""
    def dJ_dw(x, y, w, b):
        h = σ(w * x + b)
        return local(x, y, w, b, h).mean()
    return {"dJ_dw": dJ_dw}


def _ce(fn):
    def grad(logits, labels):
        n, c = logits.shape
        return fn(torch.softmax(logits, dim=1), F.one_hot(labels, c).to(logits.dtype), n, logits, labels)
    return {"softmax_cross_entropy_grad": grad}


def _assign(p, y, n, logits, labels):
    d = p.clone()
    d[torch.arange(n), labels] = -1.0
    return d / n


def _two_layer_hidden(dz1_of):
    return {"two_layer_loss_and_grads": lambda X, y, p: E.l5_two_layer(X, y, p, dz1_of=dz1_of)}


def _l7_backward(mask_of):
    def backward(dlogits, caches):
        c1, r1, c2, r2, c3 = caches
        grads = {}
        da2, grads["W3"], grads["b3"] = E.l7_linear_backward(dlogits, c3)
        dz2 = mask_of(da2, r2)
        da1, grads["W2"], grads["b2"] = E.l7_linear_backward(dz2, c2)
        dz1 = da1 * r1
        grads["W1"], grads["b1"] = c1[0].T @ dz1, dz1.sum(0)
        return grads
    return {"backward": backward}


def _lsm(fn):
    """lesson 7's log_softmax_backward(dlogp, logp) written from p = exp(logp) and the row sums."""
    return {"log_softmax_backward": lambda d, logp: fn(d, logp, logp.exp())}


NAMED = [
    # the sigmoid layer of lesson 5 (cache = out = σ(x))
    ("L5.sigmoid_backward", {"sigmoid_forward": lambda x: (σ(x), x), "sigmoid_backward": lambda d, x: d * x * (1 - x)},
     "wrong_point"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * σ(s) * (1 - σ(s))}, "wrong_point"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * σ(d) * (1 - σ(d))}, "wrong_point"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * (1 - d)}, "wrong_point"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * s}, "sigmoid_part"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * (1 - s)}, "sigmoid_part"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d.clone()}, "dropped"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * (s * (1 - s)) ** 2}, "twice"),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: s * (1 - s)}, "no_upstream"),
    # a local derivative on its own (lesson 3): no upstream factor to drop
    ("L3.dsigma_dz", {"dsigma_dz": lambda z: σ(z)}, "sigmoid_part"),
    ("L3.dsigma_dz", {"dsigma_dz": lambda z: σ(σ(z)) * (1 - σ(σ(z)))}, "wrong_point"),
    # ReLU
    ("L5.relu_backward", {"relu_backward": lambda d, x: d.clone()}, "mask_missing"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * x * (x > 0)}, "relu_slope"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: torch.where(d > 0, d, torch.zeros_like(d))}, "mask_upstream"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * (x <= 0)}, "mask_inverted"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * (x >= 0)}, "mask_at_zero"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: (x > 0).to(d.dtype)}, "no_upstream"),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * σ(x) * σ(-x)}, "other_activation"),
    # softmax and cross-entropy
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (torch.softmax(z, 0) - y) / n), "softmax_axis"),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: -y * (1 - p) / n), "softmax_diag"),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (p + y) / n), "onehot_added"),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: p / n), "onehot_missing"),
    ("L6.softmax_cross_entropy_grad", _ce(_assign), "last_term"),
    # linear layers
    ("L5.linear_backward", _l5_linear(dW=_dW_loop_overwrites), "last_term"),
    ("L5.linear_backward", _l5_linear(db=lambda d, x, W: d[-1].clone()), "last_term"),
    ("L5.linear_backward", _l5_linear(db=lambda d, x, W: (x.T @ d).sum(0)), "wrong_factor"),
    ("L5.linear_backward", _l5_linear(dx=lambda d, x, W: d @ (x.T @ d).T), "wrong_factor"),
    # the one-neuron gradient of lesson 2: the loss's and the linear part's slips
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * h * h * (1 - h) * x), "error_term"),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: (h - y) ** 2 * h * (1 - h) * x), "loss_for_grad"),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h) * x[0]), "stale_input"),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h)), "dropped"),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h) * x * x), "twice"),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h) * w), "wrong_factor"),
    # weight penalty λ·ΣW²
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: c[0].T @ d}, "reg_coeff"),
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: c[0].T @ d + 0.5 * lam * c[1]}, "reg_coeff"),
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: c[0].T @ d + lam * (c[1] ** 2).sum()}, "penalty_value"),
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: c[0].T @ d + lam * c[1] ** 2}, "penalty_value"),
    # whole networks: the mistake sits inside, the graded gradients are the parameters'
    ("L5.two_layer", _two_layer_hidden(lambda da1, z1: da1), "mask_missing"),
    ("L5.two_layer", _two_layer_hidden(lambda da1, z1: da1 * (da1 > 0)), "mask_upstream"),
    ("L7.backward", _l7_backward(lambda da2, r2: da2 * (da2 > 0)), "mask_upstream"),
    ("L7.backward", _l7_backward(lambda da2, r2: r2.to(da2.dtype)), "no_upstream"),
    # the log-softmax node of lesson 7 (the first layer whose outputs each depend on a whole row)
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d.clone()), "dropped"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - d * p), "softmax_diag"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - p * d.sum(0)), "softmax_axis"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - p * d.sum()), "softmax_axis"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - logp * d.sum(1)[:, None]), "wrong_factor"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - torch.einsum("bc,bc->b", d, logp)[:, None]),
     "wrong_factor"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: p * d - p * (p * d).sum(1)[:, None]), "other_activation"),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: p + d), "no_upstream"),
]


@pytest.mark.parametrize("key, student, kind", NAMED, ids=[f"{k}-{kind}" for k, _, kind in NAMED])
def test_each_formula_mistake_is_named(key, student, kind):
    got, message = diagnosed(key, student)
    assert got == kind, message
    assert "Fix:" in message.splitlines()[0]
    assert len(message.splitlines()) <= 7 and max(len(line) for line in message.splitlines()) < 330


def test_every_formula_kind_is_covered_here_or_in_the_corpus():
    from mistakes.cases import CORPUS

    covered = {k for _, _, k in NAMED} | {m.kind for m in CORPUS}
    assert FORMULA_KINDS <= covered, FORMULA_KINDS - covered


# --------------------------------------------------------------------------- never misleading
UNUSUAL_RIGHT = [
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * s - d * s * s}),
    ("L5.sigmoid_backward", {"sigmoid_forward": lambda x: (σ(x), x),
                             "sigmoid_backward": lambda d, x: d * torch.exp(-x) / (1 + torch.exp(-x)) ** 2}),
    ("L5.relu_backward", {"relu_backward": lambda d, x: torch.where(x > 0, d, torch.zeros_like(d))}),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * torch.sign(torch.relu(x))}),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (torch.log_softmax(z, 1).exp() - y) / n)),
    ("L5.linear_backward", _l5_linear(dW=lambda d, x, W: torch.einsum("ni,nj->ij", x, d),
                                      db=lambda d, x, W: torch.ones(len(d), dtype=d.dtype) @ d)),
    ("L3.dsigma_dz", {"dsigma_dz": lambda z: 1 / (torch.exp(z / 2) + torch.exp(-z / 2)) ** 2}),
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: torch.einsum("ni,nj->ij", c[0], d) + lam * 2 * c[1]}),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: torch.einsum(
        "bk,bkj->bj", d, torch.eye(p.shape[1], dtype=p.dtype) - p[:, None, :]))),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - torch.softmax(logp, 1) * (d @ torch.ones_like(p[0]))[:, None])),
]


@pytest.mark.parametrize("key, student", UNUSUAL_RIGHT, ids=[k for k, _ in UNUSUAL_RIGHT])
def test_unusual_right_answers_pass(key, student):
    assert diagnosed(key, student) == (None, "")


UNRELATED = [
    # other activations' derivatives, shifted or scaled formulas, label smoothing: no usual slip fits
    ("L5.sigmoid_backward", {"sigmoid_forward": lambda x: (σ(x), x),
                             "sigmoid_backward": lambda d, x: d * (1 - torch.tanh(x) ** 2)}),
    ("L5.sigmoid_backward", {"sigmoid_forward": lambda x: (σ(x), x),
                             "sigmoid_backward": lambda d, x: d * σ(x + 1) * (1 - σ(x + 1))}),
    ("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: d * s * (1 - s) + 1e-3 * d.abs()}),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * (x > 0.5)}),
    ("L5.relu_backward", {"relu_backward": lambda d, x: d * torch.where(x > 0, 1.0, 0.01).to(d.dtype)}),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (p - (0.9 * y + 0.1 / y.shape[1])) / n)),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (torch.log_softmax(z, 1) - y) / n)),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (torch.softmax(z / 2, 1) - y) / n)),
    ("EXT.l2_linear", {"linear_backward_l2": lambda d, c, lam: 0.5 * c[0].T @ d + 2 * lam * c[1]}),
    ("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h) * x + 0.01 * x ** 3)),
    ("L5.two_layer", _two_layer_hidden(lambda da1, z1: da1 * (1 - torch.tanh(z1) ** 2))),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - 1.1 * p * d.sum(1)[:, None])),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d + p * d.sum(1)[:, None])),
    ("L7.log_softmax_backward", _lsm(lambda d, logp, p: d - p.sqrt() * d.sum(1)[:, None])),
    # two mistakes at once: one of them fits only with the other taken away, so neither is named
    ("L5.sigmoid_backward", {"sigmoid_forward": lambda x: (σ(x), x), "sigmoid_backward": lambda d, x: 2 * d * x * (1 - x)}),
    ("L5.relu_backward", {"relu_backward": lambda d, x: -d * (d > 0)}),
    ("L6.softmax_cross_entropy_grad", _ce(lambda p, y, n, z, l: (p + y))),
]


@pytest.mark.parametrize("key, student", UNRELATED, ids=[k for k, _ in UNRELATED])
def test_unrelated_and_combined_mistakes_are_not_given_a_formula_name(key, student):
    kind, message = diagnosed(key, student)
    assert kind is not None, "a wrong answer passed"
    assert kind not in FORMULA_KINDS, message
    assert "Fix:" not in message


def test_a_single_informative_element_is_not_enough():
    """mask_at_zero shows only where x is exactly 0: one such element in all the cases proves nothing."""
    spec = SPECS["L5.relu_backward"]
    one_zero = [(label, inputs) for label, inputs in spec.cases if "zeros" not in label]
    x = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    one_zero.append(("one exact zero", {"x": x, "dout": torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)}))
    with pytest.raises(GradientError) as err:
        spec.exercise.check(spec.answer({**E.RIGHT["L5.relu_backward"],
                                         "relu_backward": lambda d, x: d * (x >= 0)}), one_zero)
    assert err.value.kind != "mask_at_zero"
    with pytest.raises(GradientError) as err:  # with two such elements (the lesson's own zero case) it is named
        spec.exercise.check(spec.answer({**E.RIGHT["L5.relu_backward"],
                                         "relu_backward": lambda d, x: d * (x >= 0)}), spec.cases)
    assert err.value.kind == "mask_at_zero"


class _Twin(V.Op):
    """An op whose two usual slips give the same numbers: the diagnosis must not pick one."""

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, z):
        return torch.tanh(z)

    def variants(self, values, g, local, names):
        yield V.Variant("dropped", self.inputs[0], "a", "a.", g.clone())
        yield V.Variant("mask_missing", self.inputs[0], "b", "b.", g.clone())


def test_two_different_slips_that_both_fit_are_not_named():
    graph = V.Graph(_Twin("out", "x"), V.Dot("J", "out", "dout"), upstream="dout")
    exercise = V.Exercise(graph, "x", name="dx")
    gen = torch.Generator().manual_seed(3)
    cases = [(f"case {i}", {"x": torch.randn(5, 3, generator=gen), "dout": torch.randn(5, 3, generator=gen)})
             for i in range(3)]
    with pytest.raises(GradientError) as err:
        exercise.check(lambda x, dout: dout.clone(), cases)
    assert err.value.kind not in ("dropped", "mask_missing") and "Fix:" not in str(err.value)


def test_mask_hints_are_scoped_to_a_computation_with_a_mask():
    """compare alone calls a softmax gradient's zeros "a mask such as (z > 0)"; with the computation it does not."""
    spec = SPECS["L6.softmax_cross_entropy_grad"]
    label, inputs = spec.cases[0]
    logits, labels = inputs["logits"], inputs["labels"]
    p = torch.softmax(logits, 1)
    y = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    got = -y * (1 - p) / len(logits)  # the diagonal-only slip, at n = 1: one element is nonzero
    expected = spec.exercise.expected(inputs)["dL/dlogits"]
    assert "mask" in compare("dL/dlogits", got, expected).diagnosis  # what compare alone says (misleading)
    scoped = compare("dL/dlogits", got, expected, computation=spec.exercise, inputs=inputs)
    assert "mask" not in scoped.diagnosis
    relu = SPECS["L5.relu_backward"]
    _, inputs = relu.cases[5]
    x, dout = inputs["x"], inputs["dout"]
    odd = dout * (x > 0.5)
    kept = compare("dx", odd, relu.exercise.expected(inputs)["dx"], computation=relu.exercise, inputs=inputs)
    assert "mask" in kept.diagnosis and kept.kind == "values"


def test_compare_with_a_computation_names_a_formula_mistake_on_one_case():
    spec = SPECS["L5.relu_backward"]
    _, inputs = spec.cases[2]
    x, dout = inputs["x"], inputs["dout"]
    expected = spec.exercise.expected(inputs)["dx"]
    plain = compare("dx", dout * (dout > 0), expected)
    assert plain.kind == "values"
    result = compare("dx", dout * (dout > 0), expected, computation=spec.exercise, inputs=inputs)
    assert result.kind == "mask_upstream" and "sign of the upstream gradient dout" in result.diagnosis
    assert compare("dx", dout * (x > 0), expected, computation=spec.exercise, inputs=inputs).ok


# --------------------------------------------------------------------------- the first message
def test_the_message_comes_from_an_informative_case():
    """At n = 1 a two-layer gradient is one outer product, so compare sees "a factor 4"; the mechanism speaks from
    a larger case and names the real slip."""
    spec = SPECS["L5.two_layer"]
    student = {"two_layer_loss_and_grads": lambda X, y, p: E.l5_two_layer(X, y, p, dz2_of=lambda dp, p, z2: dp)}
    answer = spec.answer(student)
    label, inputs = spec.cases[0]
    assert label.startswith("n=1,")
    first = spec.exercise.compare_case(label, inputs, answer(**inputs))
    assert first.comparisons["dJ/dW1"].kind == "factor"  # a coincidence of one row
    with pytest.raises(GradientError) as err:
        spec.exercise.check(answer, spec.cases)
    head = str(err.value).splitlines()[0]
    assert err.value.kind == "dropped" and "n=1," not in head and "×" not in head
    assert head.startswith("dJ/dW2 is wrong")  # the gradient nearest the loss among the wrong ones


def test_informative_case_prefers_more_wrong_values_and_puts_a_single_value_last():
    exercise = SPECS["L5.relu_backward"].exercise
    rows = []
    for n in (1, 7, 3):
        x = torch.linspace(-1, 1, 6 * n).reshape(n, 6)
        inputs = {"x": x, "dout": torch.ones_like(x)}
        rows.append(exercise.compare_case(f"n={n}", inputs, torch.ones_like(x)))
    assert V.informative_case(rows).label == "n=7"
    right = exercise.compare_case("right", rows[1].inputs, rows[1].expected["dx"])
    assert V.informative_case([right]) is None
    broken = exercise.compare_case("none", rows[0].inputs, None)
    assert V.informative_case(rows + [broken]).label == "none"  # a structural failure needs no pattern


# --------------------------------------------------------------------------- probing the student's code
def test_an_answer_from_the_upstream_gradient_alone_is_found_by_probing():
    kind, message = diagnosed("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: torch.tanh(d) ** 2})
    assert kind == "wrong_point" and "does not depend on x at all" in message


def test_an_answer_that_ignores_the_upstream_gradient_is_found_by_probing():
    kind, message = diagnosed("L5.relu_backward", {"relu_backward": lambda d, x: torch.tanh(x).abs()})
    assert kind == "no_upstream" and "does not change when the upstream gradient dout does" in message


def test_a_constant_times_the_upstream_is_not_called_a_wrong_point():
    kind, message = diagnosed("L5.sigmoid_backward", {"sigmoid_backward": lambda d, s: 0.25 * d})
    assert kind not in FORMULA_KINDS, message


# --------------------------------------------------------------------------- the labels a grader reads
def test_check_grad_raises_a_gradient_error_with_the_kind():
    with pytest.raises(AssertionError) as err:
        check_grad("dW", -torch.ones(3), torch.ones(3), context="n=3")
    assert isinstance(err.value, GradientError)
    assert (err.value.kind, err.value.gradient) == ("sign", "dW") and err.value.comparison.kind == "sign"


def test_check_calls_each_on_right_answers_and_fail_on_a_wrong_one():
    spec = SPECS["L5.relu_backward"]
    seen = []
    spec.exercise.check(spec.answer(E.RIGHT["L5.relu_backward"]), spec.cases,
                        each=lambda name, got, expected, label: seen.append((name, label)))
    assert len(seen) == len(spec.cases) and seen[0][0] == "dx"
    raised = []

    def fail(message, kind=None, gradient=None):
        raised.append((kind, gradient))
        raise RuntimeError(message)

    with pytest.raises(RuntimeError, match="mask"):
        spec.exercise.check(spec.answer({**E.RIGHT["L5.relu_backward"], "relu_backward": lambda d, x: d * 1.0}),
                            spec.cases, fail=fail)
    assert raised == [("mask_missing", "dx")]


# --------------------------------------------------------------------------- a worked example of adoption
SIGMOID_LAYER = V.Exercise(
    V.Graph(V.Sigmoid("out", "x"), V.Dot("J", "out", "dout"), upstream="dout", grad_notation={"out": "dout"}),
    wrt="x", name="dx")


def check_sigmoid_backward_example(sigmoid_forward, sigmoid_backward):
    """What lesson05.check_sigmoid_backward becomes with the mechanism: the same cases and the same student
    calls, and one ``check`` that compares, diagnoses and raises the lesson's CheckFailure."""
    from gradlab.grading import common

    def answer(x, dout):
        _, cache = common.call_student(sigmoid_forward, "sigmoid_forward", x)
        return common.call_student(sigmoid_backward, "sigmoid_backward", dout, cache)

    cases = [(label, {"x": common.randn(gen, n, 6, dtype=dtype, device=device, scale=3.0),
                      "dout": common.randn(gen, n, 6, dtype=dtype, device=device)})
             for label, gen, n, dtype, device in common.cases(506)]
    SIGMOID_LAYER.check(answer, cases, each=common.check_tensor, fail=common.fail)


def test_the_worked_example_passes_the_right_layer_and_names_the_mistake():
    from gradlab.grading.common import CheckFailure

    forward = E.l5_sigmoid_forward
    check_sigmoid_backward_example(forward, E.l5_sigmoid_backward)
    with pytest.raises(CheckFailure) as err:
        check_sigmoid_backward_example(lambda x: (σ(x), x), lambda d, x: d * x * (1 - x))
    assert err.value.kind == "wrong_point" and err.value.gradient == "dx"
    assert "x·(1 − x)" in str(err.value) and "n=64" in str(err.value).splitlines()[0]
    with pytest.raises(CheckFailure) as err:  # right values in the wrong dtype: the lesson's own placement rule
        check_sigmoid_backward_example(forward, lambda d, s: (d * s * (1 - s)).double())
    assert err.value.kind == "placement"


def test_compare_with_a_computation_of_several_gradients_grades_the_one_named():
    spec = SPECS["L5.linear_backward"]
    _, inputs = spec.cases[1]  # n = 7: four outputs, so db has four values (one value alone would prove nothing)
    x, W, dout = inputs["x"], inputs["W"], inputs["dout"]
    expected = spec.exercise.expected(inputs)
    result = compare("db", (x.T @ dout).sum(0), expected["db"], computation=spec.exercise, inputs=inputs)
    assert result.kind == "wrong_factor" and "bias's local derivative is 1" in result.diagnosis
    assert compare("dx", dout @ W.T, expected["dx"], computation=spec.exercise, inputs=inputs).ok
    with pytest.raises(KeyError):
        spec.exercise.only("dz")


def test_informative_case_works_for_a_check_without_a_declared_computation():
    results = []
    for n in (1, 9, 4):
        expected = torch.linspace(-1, 1, 3 * n).reshape(n, 3)
        results.append(V.CaseResult.plain(f"n={n}", "dW", expected * 2, expected, inputs={"x": torch.ones(n, 2)}))
    case = V.informative_case(results)
    assert case.label == "n=9" and case.comparisons["dW"].kind == "factor"
    assert V.informative_case([V.CaseResult.plain("right", "dW", torch.ones(2), torch.ones(2))]) is None


def test_every_kind_a_variant_names_is_documented():
    kinds = set()
    for spec in SPECS.values():
        _, inputs = spec.cases[-1]
        kinds |= {variant.kind for variant, _, _ in spec.exercise.variant_values(inputs)}
    assert kinds <= set(V.KINDS) and set(V.KINDS) == FORMULA_KINDS


def test_an_answer_that_changes_its_inputs_in_place_is_judged_on_the_inputs_it_was_given():
    spec = SPECS["L5.relu_backward"]

    def relu_backward(dout, x):
        dout *= (x > 0)  # right values, but dout is changed in place
        x.zero_()
        return dout

    spec.exercise.check(lambda x, dout: relu_backward(dout, x), [(l, {k: v.clone() for k, v in i.items()})
                                                                 for l, i in spec.cases])


# --------------------------------------------------------------------------- lessons 1 to 4's computations
def test_one_w_per_observation_names_lesson_3s_link_slips_without_an_upstream_factor():
    """Scale with w and b of x's shape: the local derivatives ∂z_i/∂w and ∂z_i/∂b on their own (no Σ, no upstream)."""
    for key, student, kind, needle in [
        ("L3.dz_dw", {"dz_dw": torch.ones_like}, "dropped", "the factor x is missing: ∂z/∂w = x. Fix: dz/dw = x."),
        ("L3.dz_dw", {"dz_dw": lambda x: x * x}, "twice", "x is multiplied in twice. Fix: dz/dw = x, with x once."),
        ("L3.dz_db", {"dz_db": lambda x: x.clone()}, "wrong_factor",
         "it multiplies by x, but ∂z/∂b = 1. Fix: dz/db = 1 for every observation, without x."),
    ]:
        got, message = diagnosed(key, student)
        assert got == kind and needle in message.splitlines()[0], message
    for key, student in [("L3.dz_dw", {"dz_dw": lambda x: x * 1.0}), ("L3.dz_db", {"dz_db": lambda x: x ** 0})]:
        assert diagnosed(key, student) == (None, "")
    kind, message = diagnosed("L3.dz_db", {"dz_db": lambda x: x + 1})
    assert kind not in FORMULA_KINDS and "Fix:" not in message, message


def test_a_scalar_w_keeps_its_messages():
    """The one-w-per-observation form changes nothing for a 0-dim w (lessons 1 and 2)."""
    kind, message = diagnosed("L2.dJ_dw", _dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * h * (1 - h)))
    assert kind == "dropped" and "the factor x is missing: ∂z/∂w = x. Fix: ∂J/∂w = Σ ∂J/∂z · x." in message
    kind, message = diagnosed("L2.dJ_db", {"dJ_db": lambda x, y, w, b: E.RIGHT["L2.dJ_dw"]["dJ_dw"](x, y, w, b)})
    assert kind == "wrong_factor" and "it multiplies by x, but ∂z/∂b = 1. Fix: ∂J/∂b = Σ ∂J/∂z, without x." in message


def _l4(**slips):
    """Lesson 4's node gradients with some nodes replaced: slips[key](X, y, w, b, right) -> that node's gradient."""
    def grads(X, y, w, b):
        right = E.l4_grads_by_graph(X, y, w, b)
        return {**right, **{k: fn(X, y, w, b, right) for k, fn in slips.items()}}
    return {"grads_by_graph": grads}


def test_lesson_4s_graph_gives_autograds_gradient_of_every_node():
    """Graph.reference with intermediate tensors: autograd's gradient of L with respect to each node's output."""
    spec = SPECS["L4.grads_by_graph"]
    _, inputs = spec.cases[-1]
    X, y, w, b = (inputs[k].detach().double().requires_grad_(k in "wb") for k in ("X", "y", "w", "b"))
    u = X @ w
    f = u + b
    e = f - y
    q = e * e
    expected = dict(zip("qefuwb", torch.autograd.grad(q.mean(), (q, e, f, u, w, b))))
    reference = spec.exercise.graph.reference(inputs, spec.exercise.wrt)
    for key in "qefuwb":
        assert torch.allclose(reference[key], expected[key], rtol=1e-12, atol=1e-14), key


@pytest.mark.parametrize("slips, kind, needle", [
    (dict(e=lambda X, y, w, b, g: 2 * (X @ w + b) / len(y)), "error_term",
     "it uses the prediction f where the error e = f − y belongs. Fix: dL/de = dL/dq · 2e, with e = f − y."),
    (dict(e=lambda X, y, w, b, g: g["q"].clone()), "dropped", "the square's local derivative ∂q/∂e = 2e is missing"),
    (dict(e=lambda X, y, w, b, g: g["q"] * (X @ w + b - y) ** 2), "loss_for_grad", "the square e² itself"),
    (dict(w=lambda X, y, w, b, g: g["w"].flip(0)), "wrong_factor", "dL/dw[0] uses the column X[:, 1]"),
])
def test_a_lesson_4_node_is_diagnosed_on_its_own_given_the_gradients_above_it(slips, kind, needle):
    """One node wrong, every other right: no slip of the whole pass fits, but the node's own does (and only it)."""
    spec = SPECS["L4.grads_by_graph"]
    key = next(iter(slips))
    node = V.Exercise(spec.exercise.graph, key, name=f"dL/d{key}")
    answer = spec.answer(_l4(**slips))
    with pytest.raises(GradientError) as err:
        node.check(lambda **inputs: answer(**inputs)[f"dL/d{key}"], spec.cases)
    assert err.value.kind == kind and needle in str(err.value).splitlines()[0], str(err.value)
    _, inputs = spec.cases[-1]
    trace = V.locate(spec.exercise.graph, inputs, grads={k[-1]: v for k, v in answer(**inputs).items()})
    assert trace.first == key and trace.diagnosis.kind == kind and trace.diagnosis.named
    assert all(n.status == "right" for n in trace.nodes if n.name != key)


def test_lesson_4s_unusual_right_answers_and_unrelated_slips():
    assert diagnosed("L4.grads_by_graph", _l4(e=lambda X, y, w, b, g: torch.where(
        g["e"] >= 0, g["e"].abs(), -g["e"].abs()))) == (None, "")
    for slips in (dict(e=lambda X, y, w, b, g: torch.tanh(g["e"])),
                  dict(e=lambda X, y, w, b, g: 3 * (X @ w + b) / len(y))):  # two slips at once
        spec = SPECS["L4.grads_by_graph"]
        node = V.Exercise(spec.exercise.graph, "e", name="dL/de")
        answer = spec.answer(_l4(**slips))
        with pytest.raises(GradientError) as err:
            node.check(lambda **inputs: answer(**inputs)["dL/de"], spec.cases)
        assert err.value.kind not in FORMULA_KINDS and "Fix:" not in str(err.value), str(err.value)


def test_locate_judges_a_float32_case_with_float32_tolerance():
    """The pass runs in float64; right float32 gradients are right (they used to be marked wrong)."""
    spec = SPECS["L4.grads_by_graph"]
    label, inputs = spec.cases[2]
    assert "float32" in label and inputs["X"].dtype == torch.float32
    right = E.l4_grads_by_graph(**inputs)
    trace = V.locate(spec.exercise.graph, inputs, grads=right)
    assert trace.ok, [(n.name, n.status) for n in trace.nodes]


def test_locate_marks_where_a_mistake_found_over_several_cases_is():
    """A single number per case cannot show a mistake on its own: given the diagnosis found over all cases, the trace
    marks the node inside the formula where it is, and the graded gradient as following from it."""
    spec = SPECS["L2.dJ_dw"]
    answer = spec.answer(_dJ_dw(lambda x, y, w, b, h: 2 * (h - y) * (w * x + b) * (1 - (w * x + b)) * x))
    results = [spec.exercise.compare_case(label, inputs, answer(**inputs)) for label, inputs in spec.cases]
    found = spec.exercise.diagnose(results)
    assert found.named and found.kind == "wrong_point" and found.key
    case = V.informative_case(results)
    alone = V.locate(spec.exercise.graph, case.inputs, grads={"w": case.got["∂J/∂w"]})
    assert alone.first == "w" and not alone.diagnosis.named  # one case, one number: nothing named
    trace = V.locate(spec.exercise.graph, case.inputs, grads={"w": case.got["∂J/∂w"]}, diagnosis=found)
    assert trace.first == "z" and trace.diagnosis is found
    assert {n.name: n.status for n in trace.nodes} == {"J": "right", "s": "unknown", "z": "wrong", "w": "consequence",
                                                       "b": "consequence"}  # b: not given, but it would follow too


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64])
def test_a_mask_returned_as_the_gradient_is_diagnosed_by_its_values_never_a_crash(dtype):
    """A bool or integer gradient (the mask x > 0 returned as it is) is compared by its values: the diagnosis, the
    most informative case and the backward pass drawn name it, with no RuntimeError from subtracting a bool."""
    kind, message = diagnosed("L5.relu_backward", {"relu_backward": lambda d, x: (x > 0).to(dtype)})
    assert kind == "no_upstream", message
    spec = SPECS["L5.relu_backward"]
    answer = spec.answer({**E.RIGHT["L5.relu_backward"], "relu_backward": lambda d, x: (x > 0).to(dtype)})
    results = [spec.exercise.compare_case(label, inputs, answer(**inputs)) for label, inputs in spec.cases]
    case = V.informative_case(results)
    assert case is not None and not case.ok
    trace = V.locate(spec.exercise.graph, case.inputs, grads={"x": case.got["dx"]})
    assert trace.first == "x", [(n.name, n.status) for n in trace.nodes]
