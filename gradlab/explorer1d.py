"""The one-parameter gradient descent explorer: the cost curve, the current point, its tangent, the path."""
import numpy as np

from .descent import evaluate_grid
from .explorer_base import DIVERGED_COLOR, FIGURE_LOCK, Explorer, check_inside, check_range, clip_to_box, num, start_slider

# Half the tangent's drawn length, as a fraction of the axes' size, whatever the slope.
TANGENT_HALF = 0.15
# Path costs are capped this many plot heights beyond the axes, to keep huge J out of the renderer.
Y_CAP_SPANS = 100.0


class DescentExplorer1D(Explorer):
    """Gradient descent on one parameter, step by step.

    cost(theta) takes a 0-d float64 tensor and returns a 0-d tensor J(θ); the slope comes from
    autograd. Controls: ``lr`` (log slider), ``start``, ``step`` and ``play``; ``readout`` shows θ, J(θ)
    and the slope of the current step. ``path`` holds θ_0..θ_m for the current lr and start (m <
    max_steps when the descent diverged, see ``diverged_at``); ``costs`` and ``slopes`` go with it.
    ``show_step(k)`` draws one frame. Artists: ``curve_line``, ``path_line``, ``point_marker``,
    ``edge_marker`` (a red triangle at the axes' edge when the point is off the plot) and ``tangent_line``.
    """

    def __init__(self, cost, theta_range=(-3.0, 5.0), start=4.0, lr=0.1, max_steps=50, lr_range=(1e-3, 10.0),
                 *, name="θ", grid=400, figsize=(6.4, 4.0), interval=200):
        super().__init__()
        self.names = (name,)
        lo, hi = check_range("theta_range", theta_range)
        self.start = start_slider(f"start {name}₀", check_inside("start", start, lo, hi), lo, hi, "gradlab-start")
        self.starts = (self.start,)
        with FIGURE_LOCK:
            self._setup(cost, lr, lr_range, max_steps, [lo], [hi], figsize, interval)
            self._build_plot(lo, hi, grid)
            self.add_class("gradlab-explorer-1d")
            self._finish()

    def _build_plot(self, lo, hi, grid):
        thetas = np.linspace(lo, hi, grid)
        curve = evaluate_grid(self.cost, thetas)
        finite = curve[np.isfinite(curve)]
        if finite.size == 0:
            raise self._no_finite_cost(f"theta_range ({lo:g}, {hi:g})")
        pad = 0.08 * (np.ptp(finite) or 1.0)
        self._box = (np.array([lo, finite.min() - pad]), np.array([hi, finite.max() + pad]))  # (θ, J) corners
        ax, name = self.ax, self.names[0]
        (self.curve_line,) = ax.plot(thetas, curve, color="0.3", lw=1.5, label=f"J({name})")
        # Animated: they move every frame, and a widget backend redraws only them (explorer_base.Blitter).
        moving = {"animated": True}
        (self.path_line,) = ax.plot([], [], "o-", color="tab:orange", ms=4, lw=1, alpha=0.8, label="path so far",
                                    **moving)
        (self.tangent_line,) = ax.plot([], [], "--", color="tab:green", lw=1.5, label="tangent", **moving)
        (self.point_marker,) = ax.plot([], [], "o", color="tab:blue", ms=9, zorder=5, label="current point", **moving)
        (self.edge_marker,) = ax.plot([], [], ">", color=DIVERGED_COLOR, ms=11, zorder=6, **moving)
        ax.set_xlim(lo, hi)
        ax.set_ylim(self._box[0][1], self._box[1][1])
        ax.set_xlabel(name)
        ax.set_ylabel(f"J({name})")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize="small", ncol=4, frameon=False)
        self.fig.tight_layout()

    def _start_point(self):
        return [self.start.value]

    @property
    def path(self):
        """θ_0..θ_m of the current descent, a 1-D array."""
        return self.descent.points[:, 0]

    @property
    def costs(self):
        return self.descent.costs

    @property
    def slopes(self):
        return self.descent.grads[:, 0]

    def _draw(self, k):
        d = self.descent
        if len(d.costs) == 0:  # J(start) itself is not finite: nothing to draw
            for artist in (self.path_line, self.tangent_line, self.point_marker, self.edge_marker):
                artist.set_data([], [])
            return
        i = min(k, len(d.costs) - 1)
        (x_lo, y_lo), (x_hi, y_hi) = self._box
        cap = Y_CAP_SPANS * (y_hi - y_lo)
        xs = list(self.path[: i + 1])
        ys = list(np.clip(d.costs[: i + 1], y_lo - cap, y_hi + cap))
        if self._diverged_by(k):
            # The next step left for good: show it leaving through the side it was heading for.
            x_edge = x_hi if self.slopes[i] < 0 else x_lo if self.slopes[i] > 0 else np.clip(xs[-1], x_lo, x_hi)
            edge = np.array([x_edge, np.clip(ys[-1], y_lo, y_hi)])
            xs.append(edge[0])
            ys.append(edge[1])
            off_plot = True
        else:
            edge, off_plot = clip_to_box(np.array([xs[-1], d.costs[i]]), *self._box)
        if off_plot:
            self.point_marker.set_data([], [])
            self.edge_marker.set_marker(self._pointing(edge))
            self.edge_marker.set_data([edge[0]], [edge[1]])
            self.tangent_line.set_data([], [])
        else:
            self.point_marker.set_data([xs[-1]], [d.costs[i]])
            self.edge_marker.set_data([], [])
            self.tangent_line.set_data(*self._tangent(xs[-1], d.costs[i], self.slopes[i]))
        self.path_line.set_data(xs, ys)

    def _pointing(self, edge):
        """A triangle marker pointing off the side of the axes that ``edge`` lies on."""
        (x_lo, _), (x_hi, y_hi) = self._box
        return ">" if edge[0] >= x_hi else "<" if edge[0] <= x_lo else "^" if edge[1] >= y_hi else "v"

    def _tangent(self, theta, J, slope):
        """End points of the tangent at (θ, J), drawn with the same on-screen length at any slope."""
        x_span, y_span = self._box[1] - self._box[0]
        half = TANGENT_HALF / np.hypot(1 / x_span, slope / y_span)
        return [theta - half, theta + half], [J - slope * half, J + slope * half]

    def _readout_html(self, k):
        d = self.descent
        if len(d.costs) == 0 or self._diverged_by(k):
            return self._diverged_html(k)
        name, lr = self.names[0], self.lr.value
        theta, J, slope = self.path[k], d.costs[k], self.slopes[k]
        off_plot = clip_to_box(np.array([theta, J]), *self._box)[1]
        return (
            f"<b>step {k}</b> &nbsp; {name} = {num(theta)} &nbsp; J({name}) = {num(J)} &nbsp; "
            f"slope dJ/d{name} = {num(slope)} &nbsp; next {name} = {name} − η·slope = {num(theta - lr * slope)}"
            + (" &nbsp; <i>(off the plot: red triangle)</i>" if off_plot else "")
        )
