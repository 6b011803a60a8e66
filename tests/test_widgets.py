"""The gradient descent explorers, headless (Agg backend): paths, readouts, artists, divergence, controls.

Every expected path is computed here with a derivative worked out by hand, never with the widget's code.
"""
import re
import subprocess
import sys

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from gradlab.descent import evaluate_grid
from gradlab.widgets import DescentExplorer1D, DescentExplorer2D

# Data of a sigmoid neuron: one input x, a label y in {0, 1}, bias fixed for the 1-D case.
X = np.array([-2.0, -1.2, -0.5, 0.1, 0.6, 1.1, 1.9, 2.5])
Y = np.array([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
B0 = -0.3


def quadratic(theta):
    return (theta - 1.5) ** 2 + 0.5


def quadratic_slope(theta):
    return 2 * (theta - 1.5)


def neuron_mse(w, b=B0):
    x, y = torch.tensor(X), torch.tensor(Y)
    return ((torch.sigmoid(w * x + b) - y) ** 2).mean()


def neuron_mse_grad(w, b=B0):
    """(∂J/∂w, ∂J/∂b) of mean((σ(wx+b) − y)²) by the chain rule: 2(σ−y)·σ(1−σ)·(x or 1), averaged."""
    s = 1 / (1 + np.exp(-(w * X + b)))
    common = 2 * (s - Y) * s * (1 - s)
    return np.mean(common * X), np.mean(common)


def hand_descent(slope, start, lr, steps):
    path = [start]
    for _ in range(steps):
        path.append(path[-1] - lr * slope(path[-1]))
    return np.array(path)


def readout_numbers(html):
    """The readout's 'name = number' pairs as a dict of floats."""
    text = re.sub(r"<[^>]+>|&nbsp;", " ", html)
    return {name: float(value) for name, value in re.findall(r"(\S+) = (-?[\d.]+(?:e[-+]?\d+)?)(?!\S)", text)}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def all_artist_data(ax):
    return np.concatenate([np.asarray(a, dtype=float).ravel() for line in ax.lines for a in line.get_data()])


def test_1d_path_of_a_quadratic_is_gradient_descent():
    ex = DescentExplorer1D(quadratic, theta_range=(-3.0, 5.0), start=4.0, lr=0.1, max_steps=50)
    np.testing.assert_allclose(ex.path, hand_descent(quadratic_slope, 4.0, 0.1, 50), rtol=1e-12, atol=1e-12)
    assert ex.diverged_at is None
    ex.lr.value = 0.3
    ex.start.value = -2.0
    np.testing.assert_allclose(ex.path, hand_descent(quadratic_slope, -2.0, 0.3, 50), rtol=1e-12, atol=1e-12)


def test_1d_path_of_the_sigmoid_neuron_mse_is_gradient_descent():
    ex = DescentExplorer1D(neuron_mse, theta_range=(-4.0, 6.0), start=-3.0, lr=2.0, max_steps=40)
    expected = hand_descent(lambda w: neuron_mse_grad(w)[0], -3.0, 2.0, 40)
    np.testing.assert_allclose(ex.path, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ex.slopes, [neuron_mse_grad(w)[0] for w in expected], rtol=1e-10, atol=1e-14)
    assert ex.costs[-1] < ex.costs[0]


def test_readout_shows_theta_cost_and_slope_of_the_current_step():
    ex = DescentExplorer1D(quadratic, theta_range=(-3.0, 5.0), start=4.0, lr=0.1, max_steps=50)
    expected = hand_descent(quadratic_slope, 4.0, 0.1, 50)
    for k in (0, 7, 50):
        ex.step.value = k
        got = readout_numbers(ex.readout.value)
        theta = expected[k]
        assert f"step {k}" in ex.readout.value
        assert got["θ"] == pytest.approx(theta, rel=1e-3)
        assert got["J(θ)"] == pytest.approx(quadratic(theta), rel=1e-3)
        assert got["dJ/dθ"] == pytest.approx(quadratic_slope(theta), rel=1e-3, abs=1e-6)


def test_step_changes_move_the_same_artists_without_new_figures():
    ex = DescentExplorer1D(quadratic, theta_range=(-3.0, 5.0), start=4.0, lr=0.1, max_steps=50)
    figures = plt.get_fignums()
    lines = list(ex.ax.lines)
    expected = hand_descent(quadratic_slope, 4.0, 0.1, 50)
    for k in (1, 5, 12):
        ex.step.value = k
        assert ex.ax.lines[:] == lines and len(ex.fig.axes) == 1
        xs, ys = ex.path_line.get_data()
        np.testing.assert_allclose(xs, expected[: k + 1])
        np.testing.assert_allclose(ys, quadratic(expected[: k + 1]))
        assert list(ex.point_marker.get_data()[0]) == pytest.approx([expected[k]])
        # The tangent passes through the current point with the slope there.
        (x0, x1), (y0, y1) = ex.tangent_line.get_data()
        assert (y1 - y0) / (x1 - x0) == pytest.approx(quadratic_slope(expected[k]))
        assert (x0 + x1) / 2 == pytest.approx(expected[k])
    assert plt.get_fignums() == figures
    # Without a widget backend the figure is shown as a PNG re-rendered each frame.
    assert isinstance(ex.view, widgets.Image) and bytes(ex.view.value).startswith(b"\x89PNG")


def test_tiny_rate_crawls_and_huge_rate_diverges_visibly():
    slow = DescentExplorer1D(quadratic, theta_range=(-3.0, 5.0), start=4.0, lr=1e-3, max_steps=50)
    assert slow.diverged_at is None
    assert abs(slow.path[-1] - 4.0) < 0.3 and slow.costs[-1] > 0.5 * slow.costs[0]

    fast = DescentExplorer1D(quadratic, theta_range=(-3.0, 5.0), start=4.0, lr=10.0, max_steps=50)
    d = fast.diverged_at
    assert d is not None and 1 <= d < 10
    np.testing.assert_allclose(fast.path, hand_descent(quadratic_slope, 4.0, 10.0, d - 1))
    fast.step.value = 50
    assert f"diverged at step {d}" in fast.readout.value and "gradlab-diverged" in fast.readout.value
    assert np.all(np.isfinite(all_artist_data(fast.ax)))
    x_edge, y_edge = (v[0] for v in fast.edge_marker.get_data())
    assert x_edge in fast.ax.get_xlim() and fast.ax.get_ylim()[0] <= y_edge <= fast.ax.get_ylim()[1]
    assert len(fast.point_marker.get_data()[0]) == 0
    # Before the divergence step the readout is the ordinary one.
    fast.step.value = d - 1
    assert "diverged" not in fast.readout.value


def test_nan_cost_stops_the_path_without_raising():
    # sqrt of a negative θ is nan: a large step past 0 must be caught, not plotted.
    ex = DescentExplorer1D(lambda t: (torch.sqrt(t) - 1) ** 2, theta_range=(0.01, 4.0), start=3.0, lr=8.0, max_steps=20)
    assert ex.diverged_at == 1 and "nan" in ex.descent.reason
    for k in range(3):
        ex.step.value = k
    assert "diverged at step 1" in ex.readout.value
    assert np.all(np.isfinite(all_artist_data(ex.ax)))


def test_2d_path_matches_hand_descent_on_a_bowl_and_on_the_neuron():
    def bowl(w, b):
        return 2 * (w - 1) ** 2 + 0.5 * (b + 1) ** 2 + 0.5 * w * b

    def bowl_grad(p):
        w, b = p
        return np.array([4 * (w - 1) + 0.5 * b, (b + 1) + 0.5 * w])

    ex = DescentExplorer2D(bowl, w_range=(-4, 4), b_range=(-4, 4), start=(3.0, -3.0), lr=0.2, max_steps=60)
    assert ex.path.shape == (61, 2)
    np.testing.assert_allclose(ex.path, hand_descent(bowl_grad, np.array([3.0, -3.0]), 0.2, 60), atol=1e-12)

    neuron = DescentExplorer2D(neuron_mse, start=(-3.0, 2.0), lr=3.0, max_steps=30)
    expected = hand_descent(lambda p: np.array(neuron_mse_grad(*p)), np.array([-3.0, 2.0]), 3.0, 30)
    np.testing.assert_allclose(neuron.path, expected, rtol=1e-10, atol=1e-12)
    neuron.step.value = 30
    got = readout_numbers(neuron.readout.value)
    gw, gb = neuron_mse_grad(*expected[30])
    assert got["w"] == pytest.approx(expected[30][0], rel=1e-3) and got["b"] == pytest.approx(expected[30][1], rel=1e-3)
    assert got["∂J/∂w"] == pytest.approx(gw, rel=1e-3) and got["∂J/∂b"] == pytest.approx(gb, rel=1e-3)
    np.testing.assert_allclose(np.column_stack(neuron.path_line.get_data()), expected)


def test_2d_divergence_is_marked_at_the_edge():
    ex = DescentExplorer2D(lambda w, b: w ** 2 + b ** 2, start=(3.0, -3.0), lr=5.0, max_steps=60)
    assert ex.diverged_at is not None
    figures, lines = plt.get_fignums(), list(ex.ax.lines)
    ex.step.value = 60
    assert "gradlab-diverged" in ex.readout.value
    assert np.all(np.isfinite(all_artist_data(ex.ax)))
    w_edge, b_edge = (v[0] for v in ex.edge_marker.get_data())
    assert w_edge in ex.ax.get_xlim() or b_edge in ex.ax.get_ylim()
    assert plt.get_fignums() == figures and ex.ax.lines[:] == lines


def test_controls_carry_css_classes_descriptions_and_the_play_link():
    ex = DescentExplorer1D(quadratic, max_steps=30)
    ex2 = DescentExplorer2D(lambda w, b: w ** 2 + b ** 2, max_steps=20, grid=20)
    for explorer, controls in (
        (ex, {"gradlab-lr": ex.lr, "gradlab-start": ex.start, "gradlab-step": ex.step, "gradlab-play": ex.play}),
        (ex2, {"gradlab-lr": ex2.lr, "gradlab-start-w": ex2.start_w, "gradlab-start-b": ex2.start_b,
               "gradlab-step": ex2.step, "gradlab-play": ex2.play}),
    ):
        for css, control in controls.items():
            assert css in control._dom_classes and control.description
        assert "gradlab-readout" in explorer.readout._dom_classes
        assert "gradlab-explorer" in explorer._dom_classes and isinstance(explorer, widgets.VBox)
        assert isinstance(explorer.lr, widgets.FloatLogSlider) and isinstance(explorer.play, widgets.Play)
        assert explorer.play.max == explorer.step.max == explorer.max_steps
        link = explorer._play_link
        assert (link.source, link.target) == ((explorer.play, "value"), (explorer.step, "value"))


def test_a_start_where_the_cost_is_nan_draws_nothing_and_says_so():
    ex = DescentExplorer1D(lambda t: (torch.log(t) - 0.5) ** 2, theta_range=(-1.0, 3.0), start=-0.5, lr=0.1)
    assert ex.diverged_at == 0 and len(ex.path) == 0
    assert "no descent from this start" in ex.readout.value
    assert all(len(line.get_xdata()) == 0 for line in (ex.path_line, ex.point_marker, ex.tangent_line))
    ex.start.value = 2.0
    assert ex.diverged_at is None and "step 0" in ex.readout.value


def test_bad_input_gets_a_clear_message_and_leaves_no_figure():
    figures = plt.get_fignums()
    with pytest.raises(ValueError, match="inf or nan everywhere"):
        DescentExplorer1D(lambda t: torch.log(-t - 10) + 0 * t, start=4.0)
    with pytest.raises(ValueError, match="lr = 50.0 is outside"):
        DescentExplorer1D(quadratic, lr=50.0)
    with pytest.raises(ValueError, match="start = 9.0 is outside"):
        DescentExplorer1D(quadratic, start=9.0)
    with pytest.raises(TypeError, match="must return a torch tensor"):
        DescentExplorer1D(lambda t: 3.0)
    with pytest.raises(TypeError, match="not connected to its parameters"):
        DescentExplorer1D(lambda t: torch.tensor((t.item() - 1) ** 2))
    with pytest.raises(ValueError, match="max_steps"):
        DescentExplorer2D(lambda w, b: w ** 2 + b ** 2, max_steps=0)
    assert plt.get_fignums() == figures


def test_grid_falls_back_to_pointwise_when_broadcasting_gives_other_values():
    # t.mean() is t for one point but the grid's mean for a whole grid: only pointwise is right.
    grid = np.linspace(-2, 2, 9)
    values = evaluate_grid(lambda t: (t - 1) ** 2 + t.mean(), grid)
    np.testing.assert_allclose(values, (grid - 1) ** 2 + grid)


def run_under_ipympl(script):
    """Run ``script`` with ipympl's backend in a fresh interpreter (this test's backend stays Agg); it prints ok."""
    script = "import matplotlib; matplotlib.use('module://ipympl.backend_nbagg')\n" + script
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow
def test_widget_backend_embeds_the_canvas_and_draws_idle():
    # ipympl's canvas is itself an ipywidget.
    script = (
        "from ipympl.backend_nbagg import Canvas\n"
        "from gradlab.widgets import DescentExplorer1D\n"
        "calls = []\n"
        "Canvas.draw_idle = lambda self: calls.append(self)\n"
        "ex = DescentExplorer1D(lambda t: (t - 1) ** 2)\n"
        "before = len(calls)\n"
        "ex.step.value = 3\n"
        "assert ex.children[0] is ex.fig.canvas and 'gradlab-figure' in ex.fig.canvas._dom_classes\n"
        "assert calls[before:] == [ex.fig.canvas], calls\n"
        "print('ok')\n"
    )
    run_under_ipympl(script)


@pytest.mark.slow
def test_widget_canvas_is_sized_before_display_and_sends_only_whole_pictures():
    # The browser abandons a picture still loading when the next arrives: a lost difference would leave
    # the figure blank or stale (gradlab/explorer_base.py, _whole_images).
    script = (
        "from ipympl.backend_nbagg import Canvas\n"
        "from gradlab.widgets import DescentExplorer2D\n"
        "sent = []\n"
        "Canvas.send_binary = lambda self, data: sent.append(self._current_image_mode)\n"
        "ex = DescentExplorer2D(lambda w, b: (w - 1) ** 2 + 3 * (b + 0.5) ** 2, start=(-2.0, 1.5), lr=0.1)\n"
        "canvas = ex.fig.canvas\n"
        "size = canvas.get_state()['_size']  # the synced state the browser's view starts from\n"
        "assert tuple(size) == tuple(ex.fig.bbox.size), (size, ex.fig.bbox.size)\n"
        "canvas._handle_message(canvas, {'type': 'initialized'}, [])\n"
        "canvas.draw()\n"
        "for k in range(1, 8):\n"
        "    ex.step.value = k\n"
        "assert len(sent) >= 8 and set(sent) == {'full'}, sent\n"
        "print('ok')\n"
    )
    run_under_ipympl(script)


@pytest.mark.slow
def test_in_a_kernel_each_explorer_is_one_widget_output_and_no_stray_figure():
    # The default backend is resolved lazily inside the explorer; the inline backend must not add a
    # static copy of the figure. Then the same under ipympl, in the same kernel to save a start.
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    cells = [
        "import torch\nfrom gradlab.widgets import DescentExplorer1D, DescentExplorer2D\n"
        "ex = DescentExplorer1D(lambda t: (t - 1) ** 2)\nex",
        "ex.step.value = 3\nex2 = DescentExplorer2D(lambda w, b: w ** 2 + b ** 2, grid=20)\nex2",
        "%matplotlib widget\nex3 = DescentExplorer1D(lambda t: (t - 1) ** 2)\nex3.step.value = 2\nex3",
        "from ipympl.backend_nbagg import Canvas\nprint(type(ex.view).__name__, isinstance(ex3.view, Canvas))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outputs = [[sorted(o.get("data", {})) for o in cell.outputs] for cell in nb.cells[:3]]
    view = ["application/vnd.jupyter.widget-view+json", "text/plain"]
    assert outputs == [[view], [view], [view]]
    assert nb.cells[3].outputs[0]["text"].split() == ["Image", "True"]


@pytest.mark.slow
def test_a_draw_request_from_another_thread_waits_until_the_explorer_is_built():
    # JupyterLab sends widget messages to a kernel subshell, which ipykernel runs in its own thread: a
    # draw request answered while a cell still builds the explorer sent half-built or blank pictures.
    script = (
        "import threading, time\n"
        "from ipywidgets.widgets.widget import _instances\n"
        "from ipympl.backend_nbagg import Canvas\n"
        "from gradlab.widgets import DescentExplorer2D\n"
        "sent = []\n"
        "Canvas.send_binary = lambda self, data: sent.append(bytes(data))\n"
        "built = threading.Event()\n"
        "def browser():  # asks every canvas for a picture from the moment it exists, like an eager browser\n"
        "    while not (built.is_set() and sent):\n"
        "        for canvas in [w for w in list(_instances.values()) if isinstance(w, Canvas)]:\n"
        "            canvas._handle_message(canvas, {'type': 'draw'}, [])\n"
        "        time.sleep(0.001)\n"
        "thread = threading.Thread(target=browser)\n"
        "thread.start()\n"
        "try:\n"
        "    ex = DescentExplorer2D(lambda w, b: (w - 1) ** 2 + 3 * (b + 0.5) ** 2, start=(-2.0, 1.5), lr=0.1)\n"
        "finally:\n"
        "    built.set()\n"
        "    thread.join()\n"
        "early = list(sent)\n"
        "ex.fig.canvas.draw()\n"
        "assert early and all(p == sent[-1] for p in early), [len(p) for p in early] + [len(sent[-1])]\n"
        "print('ok')\n"
    )
    run_under_ipympl(script)


def test_a_blank_report_from_the_browser_sends_the_picture_again():
    ex = DescentExplorer1D(quadratic, max_steps=10)
    assert "gradlab-figure-watch" in ex.watch._dom_classes and ex.watch in ex.children
    ex.view.value = b""  # the picture the browser holds is gone
    ex.watch._handle_custom_msg({"drawn": True, "blank_ms": 0}, [])
    assert ex.watch.drawn is True and ex.watch.redraws == 0 and ex.view.value == b""
    ex.watch._handle_custom_msg({"drawn": False, "blank_ms": 1500}, [])
    assert ex.watch.drawn is False and ex.watch.redraws == 1
    assert bytes(ex.view.value).startswith(b"\x89PNG")


@pytest.mark.slow
def test_under_ipympl_a_blank_report_gets_a_whole_picture_and_the_figure_size():
    script = (
        "import json\n"
        "from ipympl.backend_nbagg import Canvas\n"
        "from gradlab.widgets import DescentExplorer1D\n"
        "sent = []\n"
        "Canvas.send_binary = lambda self, data: sent.append(('picture', self._current_image_mode))\n"
        "Canvas.send = lambda self, content, buffers=None: sent.append(json.loads(content['data'])['type'])\n"
        "ex = DescentExplorer1D(lambda t: (t - 1) ** 2)\n"
        "sent.clear()\n"
        "pictures = ex.watch.pictures\n"
        "ex.watch._handle_custom_msg({'drawn': True, 'blank_ms': 0}, [])\n"
        "assert sent == [], sent\n"
        "ex.watch._handle_custom_msg({'drawn': False, 'blank_ms': 1500}, [])\n"
        "assert 'resize' in sent and sent[-1] == ('picture', 'full'), sent\n"
        "assert ex.watch.redraws == 1 and ex.watch.pictures == pictures + 1\n"
        "print('ok')\n"
    )
    run_under_ipympl(script)
