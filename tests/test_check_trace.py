"""gradlab.variants.locate: the first wrong gradient of a whole backward pass, and what follows from it."""
import pytest
import torch

from gradlab import variants as V
from gradlab.graph import BackwardDrawing
from mistakes import exercises as E

SPECS = E.all_specs()


@pytest.fixture
def two_layer():
    """Lesson 5's network on one case (n = 64, float64) and its forward values."""
    spec = SPECS["L5.two_layer"]
    _, inputs = spec.cases[5]
    P = {k: inputs[k] for k in E.NAMES5}
    X, y = inputs["X"], inputs["y"]
    z1 = X @ P["W1"] + P["b1"]
    a1 = z1.clamp(min=0)
    z2 = a1 @ P["W2"] + P["b2"]
    p = torch.sigmoid(z2)
    return spec.exercise.graph, inputs, dict(X=X, y=y, z1=z1, a1=a1, z2=z2, p=p, **P)


def grads_of(v, dz2_of=None, dz1_of=None):
    """The student's intermediate and parameter gradients, with a slip where asked."""
    dp = 2 * (v["p"] - v["y"]) / len(v["y"])
    dz2 = dp * v["p"] * (1 - v["p"]) if dz2_of is None else dz2_of(dp, v)
    da1 = dz2 @ v["W2"].T
    dz1 = da1 * (v["z1"] > 0) if dz1_of is None else dz1_of(da1, v)
    return {"p": dp, "z2": dz2, "a1": da1, "z1": dz1, "W1": v["X"].T @ dz1, "b1": dz1.sum(0),
            "W2": v["a1"].T @ dz2, "b2": dz2.sum(0)}


def statuses(trace):
    return {n.name: n.status for n in trace.nodes}


def test_right_gradients_are_all_right(two_layer):
    graph, inputs, v = two_layer
    trace = V.locate(graph, inputs, grads=grads_of(v))
    assert trace.ok and trace.first is None and trace.explain() == "Every gradient given is right."
    assert set(statuses(trace).values()) == {"right"}
    assert "X" not in statuses(trace)  # data: nobody computes its gradient


def test_intermediate_gradients_find_the_first_wrong_one_and_its_consequences(two_layer):
    graph, inputs, v = two_layer
    trace = V.locate(graph, inputs, grads=grads_of(v, dz1_of=lambda da1, v: da1))  # the ReLU mask is missing
    assert trace.first == "z1" and trace.diagnosis.kind == "mask_missing"
    assert statuses(trace) == {"J": "right", "p": "right", "z2": "right", "a1": "right", "W2": "right",
                               "b2": "right", "z1": "wrong", "W1": "consequence", "b1": "consequence"}
    text = trace.explain()
    assert text.startswith("The first wrong gradient is dz1: the ReLU mask is missing")
    assert "dW1, db1 are wrong only because of it." in text


def test_only_the_parameter_gradients_still_point_at_the_node_inside(two_layer):
    graph, inputs, v = two_layer
    all_grads = grads_of(v, dz2_of=lambda dp, v: dp * v["z2"] * (1 - v["z2"]))
    trace = V.locate(graph, inputs, grads={k: all_grads[k] for k in E.NAMES5})
    assert trace.first == "z2" and trace.diagnosis.kind == "wrong_point"
    node = next(n for n in trace.nodes if n.name == "z2")
    assert node.label == "dz2 (not given)" and not node.known and "z2·(1 − z2)" in node.note
    s = statuses(trace)
    assert s["p"] == "unknown" and all(s[k] == "consequence" for k in ("a1", "z1", "W1", "b1", "W2", "b2"))


def test_without_a_usual_mistake_later_wrong_gradients_are_unclear_not_consequences(two_layer):
    graph, inputs, v = two_layer
    all_grads = grads_of(v, dz2_of=lambda dp, v: dp * torch.cos(v["z2"]))
    trace = V.locate(graph, inputs, grads={k: all_grads[k] for k in E.NAMES5})
    s = statuses(trace)
    assert trace.first == "W2" and s["W2"] == "wrong" and not trace.diagnosis.named
    assert s["b2"] == s["W1"] == s["b1"] == "unclear"
    assert "are not given" in trace.explain()


def test_two_independent_mistakes_with_intermediate_gradients(two_layer):
    graph, inputs, v = two_layer
    grads = grads_of(v, dz2_of=lambda dp, v: dp * v["p"], dz1_of=lambda da1, v: da1)
    trace = V.locate(graph, inputs, grads=grads)
    s = statuses(trace)
    assert trace.first == "z2" and s["z2"] == "wrong"
    assert s["a1"] == "consequence" and s["W2"] == "consequence" and s["z1"] == "also wrong"
    assert s["W1"] == "consequence" and s["p"] == "right"
    assert "wrong for a reason of its own as well" in trace.explain()


@pytest.fixture
def network():
    spec = SPECS["L7.backward"]
    _, inputs = spec.cases[4]
    return spec.exercise.graph, inputs


def helpers(graph, **student):
    functions = dict(linear_forward=E.l7_linear_forward, linear_backward=E.l7_linear_backward,
                     relu_forward=E.l7_relu_forward, relu_backward=E.l7_relu_backward)
    functions.update(student)
    return V.layer_helpers(graph, **functions)


def test_helpers_right(network):
    graph, inputs = network
    assert V.locate(graph, inputs, helpers=helpers(graph)).ok


def test_a_wrong_helper_is_found_given_the_right_upstream_and_each_use_of_it_is_marked(network):
    graph, inputs = network
    trace = V.locate(graph, inputs, helpers=helpers(graph, relu_backward=lambda dout, cache: dout * (dout > 0)))
    s = statuses(trace)
    assert trace.first == "z2" and trace.diagnosis.kind == "mask_upstream"
    assert s["z1"] == "also wrong"  # the same helper at the first layer: wrong given its own upstream too
    assert s["a1"] == s["W2"] == s["W1"] == "consequence" and s["W3"] == s["a2"] == "right"
    z1 = next(n for n in trace.nodes if n.name == "z1")
    assert "sign of the upstream gradient da1" in z1.note


def test_a_linear_helper_that_uses_dW_for_W(network):
    graph, inputs = network

    def linear_backward(dout, cache):
        x, W = cache
        dW = x.T @ dout
        return dout @ dW.T, dW, dout.sum(0)

    trace = V.locate(graph, inputs, helpers=helpers(graph, linear_backward=linear_backward))
    assert trace.first == "a2" and trace.diagnosis.kind == "wrong_factor"
    assert statuses(trace)["W3"] == "right" and statuses(trace)["W2"] == "consequence"


def test_a_helper_that_raises_is_the_wrong_node(network):
    graph, inputs = network

    def relu_backward(dout, cache):
        raise ValueError("shapes do not match")

    trace = V.locate(graph, inputs, helpers=helpers(graph, relu_backward=relu_backward))
    assert trace.first == "z2" and trace.diagnosis.kind == "exception" and "ValueError" in trace.diagnosis.sentence


def test_the_trace_draws_itself(two_layer):
    graph, inputs, v = two_layer
    trace = V.locate(graph, inputs, grads=grads_of(v, dz1_of=lambda da1, v: da1))
    drawing = trace.draw()
    assert isinstance(drawing, BackwardDrawing)
    assert "dz1" in drawing.svg and "ReLU mask is missing" in drawing.svg
    assert trace._repr_svg_() == drawing.svg


def test_lesson_3_chain_with_the_students_local_derivatives():
    """Lesson 3's helpers are local derivatives, not backward functions: each becomes one line of ``helpers``."""
    spec = SPECS["L3.backward"]
    graph = spec.exercise.graph
    _, inputs = spec.cases[2]

    def dJ_dsigma(s, y):
        return 2 * (s - y) / s.shape[0]

    def dsigma_dz(z):  # the slip: the output's form applied to the input
        return z * (1 - z)

    local = {
        "J": lambda g, v: {"s": g * dJ_dsigma(v["s"], v["y"])},
        "s": lambda g, v: {"z": g * dsigma_dz(v["z"])},
        "z": lambda g, v: {"w": (g * v["x"]).sum(), "b": (g * torch.ones_like(v["x"])).sum()},
    }
    trace = V.locate(graph, inputs, helpers=local)
    assert trace.first == "z" and trace.diagnosis.kind == "wrong_point"
    assert statuses(trace) == {"J": "right", "s": "right", "z": "wrong", "w": "consequence", "b": "consequence"}
    assert [n.label for n in trace.nodes] == ["J", "∂J/∂σ", "∂J/∂z", "∂J/∂w", "∂J/∂b"]
