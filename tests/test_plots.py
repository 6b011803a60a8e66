"""gradlab.plots draws lesson 2's figures from the numbers it is given (Agg backend, no notebook)."""
import matplotlib.pyplot as plt
import pytest
import torch

from gradlab import plots


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_curve_draws_the_cost_and_its_marks():
    ws = torch.linspace(-1, 1, 21)
    fig = plots.curve(ws, ws ** 2, title="t", marks={"lowest": (0.0, 0.0)}, show=False)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()][1:] == ["lowest"]
    assert torch.allclose(torch.as_tensor(ax.get_lines()[0].get_ydata()), ws ** 2)


def test_secants_close_in_on_the_given_tangent():
    fig = plots.secants(lambda w: w ** 3, 1.0, 3.0, eps=(0.5, 0.1), w_range=(0.0, 2.0), ylim=(0, 8), show=False)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "secant, ε = 0.5: slope 3.2500" in labels and "secant, ε = 0.1: slope 3.0100" in labels
    assert "tangent: slope 3.0000" in labels


def test_paths_draw_one_path_and_one_history_per_run():
    runs = {"a": ([0.0, 1.0], [1.0, 0.5]), "b": ([0.0, 2.0, 1.5], [1.0, 0.7, 0.6])}
    fig = plots.paths(torch.linspace(0, 2, 5), torch.ones(5), runs, J_star=0.4, show=False)
    left, right = fig.axes
    assert len(left.get_lines()) == 3 and [line.get_label() for line in right.get_lines()] == ["a", "b", "lowest J"]


def test_cost_map_arrows_point_downhill():
    def bowl(W, B):  # J = (w − 1)² + (b + 2)², minimum at (1, −2)
        return (W - 1) ** 2 + (B + 2) ** 2

    fig = plots.cost_map(bowl, (-3.0, 5.0), (-6.0, 2.0), marks={"minimum": (1.0, -2.0)}, b_line=0.0, arrows=5, show=False)
    ax = fig.axes[0]
    quiver = next(c for c in ax.collections if hasattr(c, "U"))
    start = torch.as_tensor(quiver.get_offsets())
    direction = torch.stack([torch.as_tensor(quiver.U), torch.as_tensor(quiver.V)], dim=1)
    to_minimum = torch.tensor([1.0, -2.0]) - start
    assert (torch.nn.functional.cosine_similarity(direction.float(), to_minimum.float()) > 0.999).all()
    assert {"minimum", "b = 0"} <= {line.get_label() for line in ax.get_lines()}


def test_histories_and_loss_and_metric():
    fig = plots.histories({"fit": [0.3, 0.2, 0.1]}, lines={"threshold": 0.15}, show=False)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["fit", "threshold"]
    ws = torch.linspace(0, 1, 11)
    fig = plots.loss_and_metric(ws, ws, (ws > 0.5).float(), torch.linspace(0.4, 0.6, 5), torch.ones(5), show=False)
    assert len(fig.axes) == 3
