"""The two-parameter gradient descent explorer: the path of (w, b) on the contours of J(w, b)."""
import numpy as np

from .descent import evaluate_grid
from .explorer_base import DIVERGED_COLOR, FIGURE_LOCK, Explorer, check_inside, check_range, clip_to_box, num, start_slider

CONTOUR_LEVELS = 14


class DescentExplorer2D(Explorer):
    """Gradient descent on two parameters, animated on the contour plot of J(w, b).

    cost(w, b) takes two 0-d float64 tensors and returns a 0-d tensor J; the gradient comes from
    autograd. Controls: ``lr``, ``start_w``, ``start_b``, ``step``, ``play``; ``readout`` shows w, b, J
    and both partial derivatives. ``path`` is an (m+1, 2) array of (w, b) (m < max_steps when the
    descent diverged, see ``diverged_at``); ``costs`` and ``grads`` go with it. ``show_step(k)`` draws
    one frame. Artists: ``path_line``, ``point_marker``, ``edge_marker`` (red, at the axes' edge when
    the point is off the plot) and ``next_line`` (the step −η·∇J about to be taken).
    """

    def __init__(self, cost, w_range=(-4.0, 4.0), b_range=(-4.0, 4.0), start=(3.0, -3.0), lr=0.5, max_steps=60,
                 lr_range=(1e-3, 10.0), *, names=("w", "b"), grid=60, figsize=(5.6, 4.6), interval=200):
        super().__init__()
        self.names = tuple(names)
        w_lo, w_hi = check_range("w_range", w_range)
        b_lo, b_hi = check_range("b_range", b_range)
        try:
            w0, b0 = start
        except (TypeError, ValueError):
            raise ValueError(f"start must be a pair ({names[0]}0, {names[1]}0); got {start!r}") from None
        self.start_w = start_slider(f"start {names[0]}₀", check_inside("start w", w0, w_lo, w_hi), w_lo, w_hi,
                                    "gradlab-start-w")
        self.start_b = start_slider(f"start {names[1]}₀", check_inside("start b", b0, b_lo, b_hi), b_lo, b_hi,
                                    "gradlab-start-b")
        self.starts = (self.start_w, self.start_b)
        with FIGURE_LOCK:
            self._setup(cost, lr, lr_range, max_steps, [w_lo, b_lo], [w_hi, b_hi], figsize, interval)
            self._build_plot(grid)
            self.add_class("gradlab-explorer-2d")
            self._finish()

    def _build_plot(self, grid):
        W, B = np.meshgrid(np.linspace(self._low[0], self._high[0], grid), np.linspace(self._low[1], self._high[1], grid))
        J = evaluate_grid(self.cost, W, B)
        finite = J[np.isfinite(J)]
        if finite.size == 0:
            raise self._no_finite_cost("the (w, b) grid")
        # Levels at quantiles of J, so the floor of a steep bowl gets contours too, not only its walls.
        levels = np.unique(np.quantile(finite, np.linspace(0, 1, CONTOUR_LEVELS + 1)))
        ax = self.ax
        if levels.size >= 2:
            filled = ax.contourf(W, B, J, levels=levels, cmap="viridis", alpha=0.55)
            ax.contour(W, B, J, levels=levels, colors="0.25", linewidths=0.5)
            self.fig.colorbar(filled, ax=ax, label="J", format="%.3g")
        # Animated: they move every frame, and a widget backend redraws only them (explorer_base.Blitter).
        moving = {"animated": True}
        (self.path_line,) = ax.plot([], [], "o-", color="tab:orange", ms=3, lw=1.2, label="path so far", **moving)
        (self.next_line,) = ax.plot([], [], "--", color="black", lw=1.5, label="next step −η∇J", **moving)
        (self.point_marker,) = ax.plot([], [], "o", color="tab:red", mec="white", ms=9, zorder=5,
                                       label="current point", **moving)
        (self.edge_marker,) = ax.plot([], [], "X", color=DIVERGED_COLOR, mec="white", ms=12, zorder=6, **moving)
        ax.set_xlim(self._low[0], self._high[0])
        ax.set_ylim(self._low[1], self._high[1])
        ax.set_xlabel(self.names[0])
        ax.set_ylabel(self.names[1])
        # Above the axes: inside, it would hide the path wherever a start slider puts it.
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize="small", ncol=3, frameon=False)
        self.fig.tight_layout()

    def _start_point(self):
        return [self.start_w.value, self.start_b.value]

    @property
    def path(self):
        """(w, b) at steps 0..m of the current descent, an (m+1, 2) array."""
        return self.descent.points

    @property
    def costs(self):
        return self.descent.costs

    @property
    def grads(self):
        return self.descent.grads

    def _draw(self, k):
        d = self.descent
        if len(d.costs) == 0:  # J(start) itself is not finite: nothing to draw
            for artist in (self.path_line, self.next_line, self.point_marker, self.edge_marker):
                artist.set_data([], [])
            return
        i = min(k, len(d.costs) - 1)
        points = d.points[: i + 1]
        p, g = points[-1], d.grads[i]
        # Only the direction of −∇J matters for where the path leaves the plot; scaling avoids overflow.
        heading = -g / np.max(np.abs(g)) if np.any(g != 0) else g
        if self._diverged_by(k):
            edge = exit_point(p, heading, self._low, self._high)
            points = np.vstack([points, edge])
            self._show(self.edge_marker, edge)
            self._show(self.point_marker, None)
            self.next_line.set_data([], [])
        else:
            shown, off_plot = clip_to_box(p, self._low, self._high)
            self._show(self.edge_marker, shown if off_plot else None)
            self._show(self.point_marker, None if off_plot else shown)
            with np.errstate(over="ignore", invalid="ignore"):
                nxt = p - self.lr.value * g
            if not (np.all(np.isfinite(nxt)) and np.all(nxt >= self._low) and np.all(nxt <= self._high)):
                nxt = exit_point(p, heading, self._low, self._high)
            self.next_line.set_data([p[0], nxt[0]], [p[1], nxt[1]])
        self.path_line.set_data(points[:, 0], points[:, 1])

    @staticmethod
    def _show(marker, point):
        marker.set_data(([], []) if point is None else ([point[0]], [point[1]]))

    def _readout_html(self, k):
        d = self.descent
        if len(d.costs) == 0 or self._diverged_by(k):
            return self._diverged_html(k)
        w_name, b_name = self.names
        (w, b), J, (gw, gb) = d.points[k], d.costs[k], d.grads[k]
        off_plot = clip_to_box(d.points[k], self._low, self._high)[1]
        return (
            f"<b>step {k}</b> &nbsp; {w_name} = {num(w)} &nbsp; {b_name} = {num(b)} &nbsp; J = {num(J)} &nbsp; "
            f"∂J/∂{w_name} = {num(gw)} &nbsp; ∂J/∂{b_name} = {num(gb)} &nbsp; |∇J| = {num(np.hypot(gw, gb))}"
            + (" &nbsp; <i>(off the plot: red cross at the edge)</i>" if off_plot else "")
        )


def exit_point(point, direction, lo, hi):
    """Where the ray from ``point`` along ``direction`` leaves the box [lo, hi] (``point`` clipped first)."""
    point, _ = clip_to_box(np.asarray(point, float), lo, hi)
    direction = np.asarray(direction, float)
    moving = direction != 0
    if not np.any(moving):
        return point
    bound = np.where(direction > 0, hi, lo)
    t = np.min((bound[moving] - point[moving]) / direction[moving])
    return np.clip(point + t * direction, lo, hi)
