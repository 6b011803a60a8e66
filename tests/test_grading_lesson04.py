"""Lesson 4's hidden checks: the lesson's solutions and every valid variant pass, typical slips fail with a message that
names the node where the slip is, autograd never earns a point. The important cases run both ways the grader runs a
check (locally, and recorded then replayed: tests/grading_modes.py)."""
import re

import numpy as np
import pytest
import torch

from course import solution_namespace
from grading_modes import both
from gradlab.grading import lesson04
from test_grading_lesson03 import WAYS, code_of

SOLUTIONS = solution_namespace("04-two-inputs/two-inputs.ipynb")
grads_by_graph, count_parameters = SOLUTIONS["grads_by_graph"], SOLUTIONS["count_parameters"]
check = lesson04.check_grads_by_graph


def passes(check_, fn):
    err, verdict = both(check_, fn)
    assert err is None, err
    return verdict


def fails(check_, fn, kind, *needles):
    """The check fails ``fn`` both ways, with this kind and a message matching every needle (regular expressions)."""
    err, verdict = both(check_, fn)
    assert err is not None, "the check passed"
    message = str(err)
    assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert re.search(needle, message), message
    return message


def defined(source):
    ns = {"torch": torch}
    exec(source, ns)
    return ns["grads_by_graph"]


def with_node(key, value_of):
    """The lesson's solution with one node's gradient replaced by value_of(X, y, w, b, right answer)."""
    def wrong(X, y, w, b):
        grads = grads_by_graph(X, y, w, b)
        grads[key] = value_of(X, y, w, b, grads)
        return grads
    return wrong


# --------------------------------------------------------------------------- the solutions
def test_the_lesson_solutions_pass_both_ways():
    for check_, fn in ((check, grads_by_graph), (lesson04.check_count_parameters, count_parameters)):
        verdict = passes(check_, fn)
        assert not verdict.notes


def test_no_hidden_check_module_holds_the_hand_gradient():
    code = code_of(lesson04)
    for pattern in (r"\b2 *\*", r"(?<!\*)\* *2\b", r"\.T *@", r"ones_like", r"/ *(len|N|n)\b", r"\.sum\(\)"):
        assert not re.search(pattern, code), f"lesson04.py holds {pattern}"


RIGHT = {
    "one expression per node, another order": """
def grads_by_graph(X, y, w, b):
    e = X @ w + b - y
    n = len(y)
    return {"w": 2 / n * (e @ X), "b": 2 / n * e.sum(), "e": 2 * e / n, "f": 2 * e / n, "u": 2 * e / n,
            "q": torch.full_like(e, 1 / n)}
""",
    "einsum, torch.where, extra keys": """
def grads_by_graph(X, y, w, b):
    N = X.shape[0]
    e = torch.einsum("ij,j->i", X, w) + b - y
    dq = torch.ones(N, dtype=X.dtype, device=X.device) / N
    de = torch.where(e >= 0, 2 * e.abs(), -2 * e.abs()) * dq
    return {"L": torch.tensor(1.0), "q": dq, "e": de, "f": de.clone(), "u": de.clone(),
            "w": (X * de[:, None]).sum(dim=0), "b": de.sum(dim=0)}
""",
    "in place on its own tensors, under torch.no_grad": """
def grads_by_graph(X, y, w, b):
    with torch.no_grad():
        g = X @ w
        g += b
        g -= y
        g.mul_(2 / X.shape[0])
        dq = torch.empty_like(g).fill_(1 / X.shape[0])
        return dict(q=dq, e=g, f=g, u=g, w=X.T.matmul(g), b=g.sum())
""",
}


@pytest.mark.parametrize("variant", RIGHT)
def test_unusual_right_answers_pass(variant):
    passes(check, defined(RIGHT[variant]))


# --------------------------------------------------------------------------- autograd is not a hand gradient
def _autograd_answer(way):
    def grads(X, y, w, b):
        u = X @ w
        f = u + b
        e = f - y
        q = e ** 2
        # one autograd call per node, each with the node's value as the input: a valid answer if autograd were allowed
        out = {}
        out["q"] = way(lambda q_: q_.mean(), q)[0]
        out["e"] = way(lambda e_: (e_ ** 2).mean(), e)[0]
        out["f"] = way(lambda f_: ((f_ - y) ** 2).mean(), f)[0]
        out["u"] = way(lambda u_: ((u_ + b - y) ** 2).mean(), u)[0]
        out["w"], out["b"] = way(lambda w_, b_: ((X @ w_ + b_ - y) ** 2).mean(), w, b)
        return out
    return grads


@pytest.mark.parametrize("way", WAYS, ids=lambda w: w.__name__)
def test_autograd_fails(way):
    fails(check, _autograd_answer(way), "autograd", "`grads_by_graph` used autograd", "derived by hand")


# --------------------------------------------------------------------------- the usual slips, named at their node
@pytest.mark.parametrize("wrong, kind, needles", [
    (with_node("q", lambda X, y, w, b, g: torch.ones_like(y)), "factor",
     [r"dL/dq is wrong \(n=7.*divide by N \(N = 7", "first node below the loss"]),
    (with_node("e", lambda X, y, w, b, g: -g["e"]), "sign",
     ["dL/de is wrong", "wrong sign", r"The gradients above it \(dL/dq\) are right"]),
    (with_node("e", lambda X, y, w, b, g: g["e"] / 2), "factor", ["dL/de is wrong", "factor 2"]),
    # kinds "recognised slip" before the diagnosis (gradlab.variants) named them from an informative case
    (with_node("e", lambda X, y, w, b, g: 2 * (X @ w + b) / len(y)), "error_term",
     [r"dL/de is wrong \(n=64.*\): it uses the prediction f where the error e = f − y belongs\. Fix: dL/de = dL/dq · 2e",
      r"The gradients above it \(dL/dq\) are right"]),
    (with_node("e", lambda X, y, w, b, g: g["q"].clone()), "dropped",
     [r"the square's local derivative ∂q/∂e = 2e is missing: dL/de equals dL/dq"]),
    (with_node("e", lambda X, y, w, b, g: g["q"] * (X @ w + b - y) ** 2), "loss_for_grad",
     [r"it uses the square e² itself where its derivative 2e belongs"]),
    (with_node("f", lambda X, y, w, b, g: -g["e"]), "sign", [r"dL/df is wrong", r"\(dL/dq, dL/de\) are right"]),
    (with_node("u", lambda X, y, w, b, g: g["e"] * X[:, 0]), "values",
     ["dL/du is wrong", r"\(dL/dq, dL/de, dL/df\) are right"]),
    (with_node("w", lambda X, y, w, b, g: g["w"].flip(0)), "wrong_factor",
     [r"dL/dw is wrong \(n=64.*the two inputs are swapped: dL/dw\[0\] uses the column X\[:, 1\]"]),
    (with_node("w", lambda X, y, w, b, g: (X.T @ g["u"]).sum()), "shape", ["dL/dw is wrong", r"shape \(2,\)"]),
    (with_node("w", lambda X, y, w, b, g: X.T @ g["u"] * len(y)), "factor", ["dL/dw is wrong", "divide by N"]),
    (with_node("b", lambda X, y, w, b, g: g["f"]), "shape",
     [r"dL/db is wrong \(n=1.*\): it should be one number, shape \(\)", "gradients that come back from all of them add up",
      r"\(dL/dq, dL/de, dL/df\) are right"]),
    (with_node("b", lambda X, y, w, b, g: g["f"].mean()), "factor", ["dL/db is wrong", "extra division by N"]),
])
def test_a_slip_is_named_at_its_node(wrong, kind, needles):
    fails(check, wrong, kind, *needles)


def test_a_factor_that_changes_with_n_is_not_named_from_one_case():
    # dw = X.T @ e: the 2/N lost, so ½, 3.5 and 32 in the three sizes; it was "½ …: a missing factor 2" from n=1
    message = fails(check, with_node("w", lambda X, y, w, b, g: X.T @ (X @ w + b - y)), "factor",
                    r"dL/dw is wrong \(n=1.*: it is N/2 × the expected one in every case \(N = 1: ½, N = 7: 3\.5, "
                    r"N = 64: 32\): both factors of 2/N are missing", "first wrong gradient|slip is in this node")
    assert "derivative of x² is 2x" not in message
    message = fails(check, with_node("w", lambda X, y, w, b, g: g["w"] * len(y) ** 0.5), "factor",
                    r"dL/dw is wrong \(n=7.*the multiple differs between the cases \(N = 7: 2\.646, N = 64: 8\)")
    assert not re.search("divide by N|division by N|factor 2", message), message
    # one constant in every case keeps its name, and is a 1/N only where it is this case's N
    fails(check, with_node("w", lambda X, y, w, b, g: g["w"] / 2), "factor",
          r"dL/dw is wrong \(n=1.*½ × the expected one: a missing factor 2 \(the derivative of x² is 2x\)")
    message = fails(check, with_node("w", lambda X, y, w, b, g: g["w"] * 8), "factor",
                    r"dL/dw is wrong \(n=1.*every value is 8 × the expected one: a constant factor is off")
    assert "N = 8" not in message


def test_the_prediction_instead_of_the_error_all_the_way_down_is_named_at_the_error_node():
    def prediction(X, y, w, b):
        return grads_by_graph(X, torch.zeros_like(y), w, b)
    fails(check, prediction, "error_term", "dL/de is wrong", "prediction f where the error",
          "The first wrong gradient is dL/de; dL/df, dL/du, dL/db, dL/dw are wrong only because of it")


@pytest.mark.parametrize("wrong, first", [
    (with_node("e", lambda X, y, w, b, g: 2 * (X @ w + b) / len(y)), "dL/de"),
    (with_node("b", lambda X, y, w, b, g: g["f"]), "dL/db"),                 # a shape: the node marked all the same
    (with_node("u", lambda X, y, w, b, g: g["e"] * X[:, 0]), "dL/du"),      # no usual slip: marked, not named
])
def test_the_failure_carries_the_graph_with_the_first_wrong_node_marked(wrong, first):
    err, verdict = both(check, wrong)
    assert err is not None and verdict.figure and verdict.figure.startswith("<?xml"), str(err)
    assert "first wrong" in verdict.figure and f'id="grad-{first[-1]}"' in verdict.figure


def test_a_second_mistake_below_the_first_is_said_to_be_one():
    def two(X, y, w, b):
        grads = grads_by_graph(X, y, w, b)
        grads["e"] = grads["q"].clone()  # the square's 2e left out ...
        grads["w"] = grads["w"].flip(0)  # ... and, independently, the weights swapped
        return grads
    fails(check, two, "dropped", "dL/de is wrong", "The first wrong gradient is dL/de; dL/dw is wrong for another "
          "reason as well")


@pytest.mark.parametrize("wrong", [
    with_node("e", lambda X, y, w, b, g: torch.tanh(g["e"])),
    with_node("e", lambda X, y, w, b, g: 3 * (X @ w + b) / len(y)),          # two slips at once
    with_node("w", lambda X, y, w, b, g: g["w"] + 0.01),
])
def test_a_node_with_no_usual_slip_is_not_given_one(wrong):
    from gradlab.variants import KINDS

    err, verdict = both(check, wrong)
    assert err is not None and err.kind not in KINDS and "Fix:" not in str(err), str(err)


def test_the_lesson_draws_the_same_graph_from_its_own_gradients():
    """lesson04.trace: what the lesson's comparison cell shows (every node green for the right gradients)."""
    X, y = torch.randn(9, 2, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    w, b = torch.randn(2, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    right = lesson04.trace(X, y, w, b, grads_by_graph(X, y, w, b))
    assert right.ok and right.explain() == "Every gradient given is right." and "<svg" in right._repr_svg_()
    wrong = lesson04.trace(X, y, w, b, with_node("e", lambda X, y, w, b, g: g["q"].clone())(X, y, w, b))
    assert wrong.first == "e" and wrong.diagnosis.kind == "dropped"


def test_a_dict_without_a_node_or_not_a_dict_fails():
    fails(check, lambda X, y, w, b: {k: v for k, v in grads_by_graph(X, y, w, b).items() if k != "u"}, "missing node",
          "has no 'u'")
    fails(check, lambda X, y, w, b: tuple(grads_by_graph(X, y, w, b).values()), "not a dict",
          "should return a dict with the keys q, e, f, u, w, b, but returned tuple")


def test_the_gradients_keep_the_inputs_dtype():
    fails(check, lambda X, y, w, b: {k: v.float() for k, v in grads_by_graph(X, y, w, b).items()}, "placement",
          r"right values but is float32.*float64")


def test_a_hard_coded_answer_fails():
    # the visible test's answers: right for that case, wrong for every hidden one
    fails(check, lambda X, y, w, b: {"q": torch.tensor([0.5, 0.5]), "e": torch.tensor([-1.0, -2.0]),
                                     "f": torch.tensor([-1.0, -2.0]), "u": torch.tensor([-1.0, -2.0]),
                                     "w": torch.tensor([-1.0, -2.0]), "b": torch.tensor(-3.0)}, "shape", "dL/dq")


def test_an_exception_in_student_code_is_reported_with_the_shapes():
    fails(check, lambda X, y, w, b: X[:, 5].sum(), "exception", r"(?s)raised IndexError.*\(1, 2\)")


def test_an_input_changed_in_place_is_named():
    def in_place(X, y, w, b):
        grads = grads_by_graph(X, y, w, b)
        y -= X @ w + b
        return grads
    fails(check, in_place, "changed input", "changed its input `y` in place")


# --------------------------------------------------------------------------- counting parameters
def test_count_parameters_accepts_numpy_and_tensor_integers():
    passes(lesson04.check_count_parameters, lambda sizes: np.int64(count_parameters(sizes)))
    passes(lesson04.check_count_parameters, lambda sizes: torch.tensor(count_parameters(sizes)))


@pytest.mark.parametrize("wrong, kind, hint", [
    (lambda s: sum(a * b for a, b in zip(s[:-1], s[1:])), "weights only", "weights only"),
    (lambda s: sum(a * b + 1 for a, b in zip(s[:-1], s[1:])), "one bias per layer", "one bias; a layer has one bias per"),
    (lambda s: sum(a * b + a for a, b in zip(s[:-1], s[1:])), "bias per input", r"per \*input\*"),
    (lambda s: sum((a + 1) * (b + 1) for a, b in zip(s[:-1], s[1:])), "bias both sides", "both sides"),
    (lambda s: sum(s), "neurons", "neurons, not the parameters"),
    (lambda s: 50890, "count", "count n_in"),
    (lambda s: float(count_parameters(s)), "not an int", "whole number"),
    (lambda s: torch.tensor(float(count_parameters(s))), "not an int", "whole number"),
])
def test_wrong_counts_fail_with_a_hint(wrong, kind, hint):
    fails(lesson04.check_count_parameters, wrong, kind, hint)


def test_count_parameters_is_tried_on_random_sizes():
    """A function that only knows the sizes the notebook shows cannot pass."""
    known = {(2, 1): 3, (3, 5, 2): 32, (784, 64, 10): 50890}
    fails(lesson04.check_count_parameters, lambda s: known.get(tuple(s), 0), "count", "returned")


def test_count_parameters_must_not_change_the_list():
    def pops(sizes):
        total = 0
        while len(sizes) > 1:
            n_in = sizes.pop(0)
            total += n_in * sizes[0] + sizes[0]
        return total
    fails(lesson04.check_count_parameters, pops, "changed input", "changed its input `sizes` in place")
