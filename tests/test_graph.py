"""gradlab.graph reads the autograd graph correctly, names the leaves, and draws it without torchviz."""
import sys
import types

import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from torch import nn

from gradlab import graph


def _neuron_loss():
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    w = torch.tensor([0.5, -0.3], requires_grad=True)
    b = torch.tensor(0.1, requires_grad=True)
    return ((X @ w + b - y) ** 2).mean(), w, b


def test_the_graph_of_a_known_loss():
    loss, w, b = _neuron_loss()
    g = graph.build_graph(loss, {"w": w, "b": b}, name="loss")
    assert [n.op for n in g.nodes] == [
        "MeanBackward0", "PowBackward0", "SubBackward0", "AddBackward0", "MvBackward0", "AccumulateGrad", "AccumulateGrad",
    ]
    assert [(n.leaf, n.shape) for n in g.nodes if n.op == "AccumulateGrad"] == [("w", (2,)), ("b", ())]
    assert sorted(g.edges) == [(0, 1), (1, 2), (2, 3), (3, 4), (3, 6), (4, 5)]
    assert g.depths() == [0, 1, 2, 3, 4, 5, 4]


def test_the_text_tree_of_a_known_loss():
    loss, w, b = _neuron_loss()
    assert graph.text_tree(graph.build_graph(loss, {"w": w, "b": b}, name="loss")) == "\n".join([
        "loss  ←  MeanBackward0",
        "└── PowBackward0",
        "    └── SubBackward0",
        "        └── AddBackward0",
        "            ├── MvBackward0",
        "            │   └── AccumulateGrad → w (2,)",
        "            └── AccumulateGrad → b (scalar)",
    ])


def test_a_tensor_used_twice_has_one_leaf_node_with_two_arrows_into_it():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    h = torch.tanh(w)
    loss = (h * h).sum() + (w**2).sum()
    g = graph.build_graph(loss, {"w": w})
    leaves = [i for i, n in enumerate(g.nodes) if n.leaf == "w"]
    assert len(leaves) == 1
    assert len([e for e in g.edges if e[1] == leaves[0]]) == 2
    tanh = [i for i, n in enumerate(g.nodes) if n.op == "TanhBackward0"]
    assert len(tanh) == 1 and len([e for e in g.edges if e[1] == tanh[0]]) == 2  # h * h: both factors
    tree = graph.text_tree(g)
    assert tree.count("TanhBackward0") == 2 and "TanhBackward0  (shared: expanded above)" in tree
    assert tree.count("AccumulateGrad → w (2,)") == 2


def test_every_edge_points_down_even_when_it_skips_rows():
    loss, w, b = _neuron_loss()
    g = graph.build_graph(loss + b, {"w": w, "b": b})  # b is reached from the root and from deep inside
    depth = g.depths()
    assert all(depth[a] < depth[b_] for a, b_ in g.edges)


def test_module_parameters_are_named():
    layer = nn.Linear(2, 1)
    loss = nn.functional.mse_loss(layer(torch.ones(4, 2)).squeeze(1), torch.zeros(4))
    g = graph.build_graph(loss, layer.named_parameters())
    assert {n.leaf: n.shape for n in g.nodes if n.op == "AccumulateGrad"} == {"weight": (1, 2), "bias": (1,)}
    assert g.nodes[0].op == "MseLossBackward0"


def test_an_unnamed_leaf_still_shows_its_shape():
    loss, w, b = _neuron_loss()
    g = graph.build_graph(loss, {"w": w})
    assert "AccumulateGrad → unnamed leaf (scalar)" in graph.text_tree(g)


def test_a_leaf_tensor_is_a_graph_of_one_node():
    w = torch.zeros(3, requires_grad=True)
    g = graph.build_graph(w, {"w": w})
    assert [(n.op, n.leaf, n.shape) for n in g.nodes] == [("AccumulateGrad", "w", (3,))] and g.edges == []


def test_bad_input_gets_a_clear_message():
    with pytest.raises(ValueError, match="no autograd graph"):
        graph.build_graph(torch.ones(3) * 2)
    with pytest.raises(ValueError, match="no autograd graph"):
        with torch.no_grad():
            graph.build_graph(torch.ones(3, requires_grad=True) * 2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        graph.build_graph(3.0)
    loss, w, b = _neuron_loss()
    with pytest.raises(TypeError, match="params should map names to tensors"):
        graph.build_graph(loss, {"w": [1.0, 2.0]})


def test_a_huge_graph_is_refused_with_a_clear_message():
    x = torch.ones(2, requires_grad=True)
    y = x
    for _ in range(300):
        y = y * 1.01
    with pytest.raises(ValueError, match="more than 200 backward functions"):
        graph.build_graph(y.sum())
    assert len(graph.build_graph(y.sum(), max_nodes=400).nodes) == 1 + 300 + 1  # sum, the products, x


def test_the_drawing_has_a_box_per_node_and_an_arrow_per_edge():
    loss, w, b = _neuron_loss()
    g = graph.build_graph(loss, {"w": w, "b": b}, name="loss")
    fig = graph.draw(g)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
    boxes = [t for t in ax.texts if not isinstance(t, Annotation)]
    assert len(arrows) == len(g.edges) and len(boxes) == len(g.nodes)
    labels = [t.get_text() for t in boxes]
    assert "loss\nMeanBackward0" in labels and "AccumulateGrad\nw (2,)" in labels
    for arrow in arrows:  # the gradient flows down, from the loss to the leaves
        assert arrow.xy[1] < arrow.xyann[1]
    fig.canvas.draw()  # renders without error, arrows clipped at the boxes


def test_draw_uses_a_given_axes():
    loss, w, b = _neuron_loss()
    fig = Figure()
    ax = fig.add_subplot()
    assert graph.draw(graph.build_graph(loss), ax=ax) is fig


def _capture_display(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    return shown


def test_show_without_torchviz_prints_the_tree_and_displays_a_figure(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchviz", None)  # import torchviz → ImportError
    shown = _capture_display(monkeypatch)
    loss, w, b = _neuron_loss()
    assert graph.show(loss, {"w": w, "b": b}) is None
    assert "AccumulateGrad → w (2,)" in capsys.readouterr().out
    assert len(shown) == 1 and isinstance(shown[0], Figure)


def _fake_torchviz(monkeypatch, calls):
    def make_dot(tensor, params=None):
        calls.append(params)
        return "a graphviz drawing"
    monkeypatch.setitem(sys.modules, "torchviz", types.SimpleNamespace(make_dot=make_dot))


def test_show_uses_torchviz_where_it_and_graphviz_are_installed(monkeypatch, capsys):
    calls = []
    _fake_torchviz(monkeypatch, calls)
    monkeypatch.setattr(graph.shutil, "which", lambda name: "/usr/bin/dot")
    shown = _capture_display(monkeypatch)
    loss, w, b = _neuron_loss()
    graph.show(loss, {"w": w, "b": b})
    assert shown == ["a graphviz drawing"]
    assert calls == [{"w": w, "b": b}]
    assert capsys.readouterr().out == ""


def test_show_falls_back_when_graphviz_dot_is_missing(monkeypatch):
    calls = []
    _fake_torchviz(monkeypatch, calls)
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    shown = _capture_display(monkeypatch)
    loss, w, b = _neuron_loss()
    graph.show(loss, {"w": w, "b": b})
    assert calls == [] and isinstance(shown[0], Figure)


# --------------------------------------------------------------------------- a backward pass with its mistake marked
MARKED = [
    {"name": "J", "label": "J", "status": "right"},
    {"name": "p", "label": "dp", "status": "right"},
    {"name": "z2", "label": "dz2", "status": "wrong", "note": "σ' is taken at p = σ(z2). Fix: use dp · p · (1 − p)."},
    {"name": "W2", "label": "dW2", "status": "consequence"},
    {"name": "a1", "label": "da1 (not given)", "status": "unknown"},
    {"name": "W1", "label": "dW1", "status": "consequence"},
]
MARKED_EDGES = [("J", "p"), ("p", "z2"), ("z2", "W2"), ("z2", "a1"), ("a1", "W1")]


def test_draw_backward_marks_each_gradient_by_its_status():
    drawing = graph.draw_backward(MARKED, MARKED_EDGES, title="lesson 5, n=64")
    ax = drawing.figure.axes[0]
    boxes = {t.get_text(): t for t in ax.texts if not isinstance(t, Annotation)}
    assert set(boxes) == {n["label"] for n in MARKED}
    for node in MARKED:
        fill, edge, hatch = graph.STATUS_STYLE[node["status"]]
        patch = boxes[node["label"]].get_bbox_patch()
        assert patch.get_facecolor() == pytest.approx(to_rgba(fill)) and patch.get_hatch() == hatch
    assert boxes["dz2"].get_fontweight() == "bold" and boxes["dW2"].get_fontweight() == "normal"
    arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
    assert len(arrows) == len(MARKED_EDGES)
    for arrow in arrows:
        assert arrow.xy[1] < arrow.xyann[1]  # from the loss down
    legend = [t.get_text() for t in drawing.figure.legends[0].get_texts()]
    assert legend == ["right", "first wrong", "wrong because of it", "not given"]  # only the statuses present


def test_the_drawing_is_svg_text_png_bytes_and_an_html_fragment():
    drawing = graph.draw_backward(MARKED, MARKED_EDGES, title="lesson 5, n=64")
    svg = drawing.svg
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and drawing.mimetype == "image/svg+xml"
    assert "dz2" in svg and "Fix: use dp · p · (1 − p)." in svg  # text kept as text
    assert drawing._repr_svg_() == svg and drawing.data == svg
    html = drawing.to_html()
    assert html.startswith('<figure class="gradlab-backward"') and "<?xml" not in html and html.count("<svg") == 1
    assert 'aria-label="lesson 5, n=64"' in html and drawing._repr_html_() == html
    assert drawing.png().startswith(b"\x89PNG\r\n\x1a\n")
    again = graph.draw_backward(MARKED, MARKED_EDGES, title="lesson 5, n=64").svg
    assert again == svg  # the same drawing gives the same bytes: feedback files do not churn


def test_draw_backward_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="unknown status 'bad'"):
        graph.draw_backward([{"name": "J", "status": "bad"}])
    with pytest.raises(ValueError, match="at least one node"):
        graph.draw_backward([])
    with pytest.raises(ValueError, match="needs a name"):
        graph.draw_backward([{"label": "J"}])


def test_draw_backward_needs_nothing_but_matplotlib():
    import subprocess
    import sys as _sys

    code = (
        "import sys; sys.modules['IPython'] = None; sys.modules['torchviz'] = None\n"
        "from gradlab import graph\n"
        "d = graph.draw_backward([{'name': 'J', 'status': 'right'}, {'name': 'w', 'label': 'dw', 'status': 'wrong',"
        " 'note': 'x'}], [('J', 'w')])\n"
        "assert 'dw' in d.svg and d.png()[:4] == b'\\x89PNG'\n"
    )
    subprocess.run([_sys.executable, "-c", code], check=True)
