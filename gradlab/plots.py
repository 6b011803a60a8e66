"""The figures of lesson 2 (gradient descent), so that the lesson's cells show what is computed, not how it is drawn.

Each function draws one figure from numbers the lesson computed and shows it; with ``show=False`` it returns the
figure instead (for tests, or to add to it). Tensors may live on any device. Only ``cost_map`` computes anything
itself: the cost on a grid, and the direction of −∇J there by autograd.

    curve(ws, Js, ...)                  a cost J(w) over a range of w, with marked points
    secants(J, w0, slope, ...)          secants through w0 ± ε closing in on the tangent
    paths(ws, Js, runs, ...)            descent paths on the curve, and their cost per step
    cost_map(cost, w_range, b_range, ...) contour map of J(w, b) with arrows of −∇J and marked points
    histories(curves, ...)              several cost histories against the step (or update) number
    loss_and_metric(ws, Js, acc, ...)   the smooth loss next to the staircase of the accuracy
"""
import io

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _cpu(t):
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def _figure(**kwargs):
    """A figure outside pyplot, drawn here and shown as a picture: under ``%matplotlib widget`` a pyplot figure
    gets a live canvas whose browser requests another kernel thread may render while it is still being built
    (the race behind explorer figures left blank); these figures need no interaction."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _done(fig, show):
    fig.tight_layout()
    if show:
        from IPython.display import Image, display

        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        display(Image(png.getvalue()))
        return None
    return fig


def curve(ws, Js, *, title, xlabel="w", ylabel="J(w)", marks=None, ylim=None, show=True):
    """J over a range of w; ``marks``: {label: (w, J)} drawn as points."""
    fig = _figure(figsize=(7, 3.4))
    ax = fig.subplots()
    ax.plot(_cpu(ws), _cpu(Js), color="0.3")
    for (label, (w, J)), color in zip((marks or {}).items(), ("tab:green", "tab:orange", "tab:red", "tab:blue")):
        ax.plot([float(w)], [float(J)], "o", color=color, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim:
        ax.set_ylim(*ylim)
    if marks:
        ax.legend(fontsize="small")
    return _done(fig, show)


def secants(J, w0, slope, *, eps=(4.0, 2.0), w_range=(0.0, 12.0), ylim=(0.0, 0.45), show=True):
    """J(w) around w0 (``J`` takes a float, returns a float), secants through w0 ± ε, and the tangent of ``slope``."""
    wz = torch.linspace(*w_range, 200, dtype=torch.float64)
    fig = _figure(figsize=(7, 3.4))
    ax = fig.subplots()
    ax.plot(wz, [J(float(w)) for w in wz], color="0.3", label="J(w)")
    for e, color in zip(eps, ("tab:red", "tab:orange", "tab:purple")):
        s = (J(w0 + e) - J(w0 - e)) / (2 * e)
        ax.plot([w0 - e, w0 + e], [J(w0 - e), J(w0 + e)], "o-", color=color, lw=1, label=f"secant, ε = {e:g}: slope {s:.4f}")
    ax.plot(wz, J(w0) + slope * (wz - w0), "--", color="tab:green", label=f"tangent: slope {slope:.4f}")
    ax.plot([w0], [J(w0)], "o", color="black")
    ax.set(xlabel="w", ylabel="J(w)", ylim=ylim, title=f"secants through w₀ ± ε shrink to the tangent at w₀ = {w0:g}")
    ax.legend(fontsize="small")
    return _done(fig, show)


def paths(ws, Js, runs, *, J_star=None, start_title="paths", show=True):
    """Descent paths drawn on the curve (left) and their cost per step (right); ``runs``: {label: (path_w, path_J)}."""
    fig = _figure(figsize=(11, 3.5))
    (left, right) = fig.subplots(1, 2)
    left.plot(_cpu(ws), _cpu(Js), color="0.3", lw=1)
    for label, (path_w, path_J) in runs.items():
        left.plot(path_w, path_J, "o-", ms=3, lw=0.8, label=label)
        right.plot(path_J, lw=1.2, label=label)
    if J_star is not None:
        right.axhline(J_star, color="0.5", ls=":", label="lowest J")
    left.set(xlabel="w", ylabel="J(w)", title=start_title)
    right.set(xlabel="step", ylabel="J", title="the cost, step by step")
    right.legend(fontsize="small")
    return _done(fig, show)


def cost_map(cost, w_range, b_range, *, marks=None, b_line=None, names=("w", "b"), levels=20, arrows=13,
             title="J(w, b)", show=True):
    """Contours of ``cost(W, B)`` (which takes two grids of the same shape, on the CPU; it may compute elsewhere)
    with arrows along −∇J.

    ``marks``: {label: (w, b)} drawn as points; ``b_line``: a horizontal line at that b (a slice of the map).
    The arrows show directions only (all the same length): autograd of the summed grid gives every grid point's
    own gradient, because each point's J depends on its own (w, b) alone.
    """
    W, B = torch.meshgrid(torch.linspace(*w_range, 120), torch.linspace(*b_range, 120), indexing="xy")
    with torch.no_grad():
        J = _cpu(cost(W, B))
    Wq, Bq = torch.meshgrid(torch.linspace(*w_range, arrows + 2)[1:-1], torch.linspace(*b_range, arrows + 2)[1:-1],
                            indexing="xy")
    Wq, Bq = Wq.clone().requires_grad_(True), Bq.clone().requires_grad_(True)
    with torch.enable_grad():
        dW, dB = torch.autograd.grad(cost(Wq, Bq).sum(), (Wq, Bq))
    length = torch.sqrt(dW ** 2 + dB ** 2).clamp_min(1e-12)
    fig = _figure(figsize=(7, 5.4))
    ax = fig.subplots()
    filled = ax.contourf(W, B, J, levels=levels, cmap="viridis")
    ax.contour(W, B, J, levels=levels, colors="0.2", linewidths=0.4)
    fig.colorbar(filled, ax=ax, label=title)
    ax.quiver(_cpu(Wq), _cpu(Bq), _cpu(-dW / length), _cpu(-dB / length), color="white", width=0.003, scale=30,
              label="direction of −∇J")
    for (label, (w, b)), (style, color) in zip((marks or {}).items(), (("*", "red"), ("o", "orange"), ("s", "cyan"))):
        ax.plot([float(w)], [float(b)], style, color=color, ms=12 if style == "*" else 8, label=label)
    if b_line is not None:
        ax.axhline(b_line, color="white", ls=":", lw=1, label=f"{names[1]} = {b_line:g}")
    ax.set(xlabel=names[0], ylabel=names[1], title=f"{title}: contours, and arrows pointing downhill")
    ax.legend(loc="lower left", fontsize="small")
    return _done(fig, show)


def histories(curves, *, xlabel="step", ylabel="J", lines=None, ylim=None, title="", show=True):
    """Cost histories, one per entry of ``curves`` ({label: sequence}); ``lines``: {label: height} drawn dashed."""
    fig = _figure(figsize=(8, 3.8))
    ax = fig.subplots()
    for label, values in curves.items():
        values = _cpu(torch.as_tensor(values))
        ax.plot(values, lw=0.8 if len(values) > 100 else 1.2, marker="o" if len(values) <= 100 else None, ms=3,
                label=label)
    for (label, height), style in zip((lines or {}).items(), ("--", ":", "-.")):
        ax.axhline(height, color="0.4", ls=style, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize="small")
    return _done(fig, show)


def loss_and_metric(ws, Js, acc, w_fine, acc_fine, show=True):
    """The loss J(w) (smooth), the accuracy over the same w (a staircase), and the accuracy zoomed in."""
    fig = _figure(figsize=(12, 3.3))
    (a1, a2, a3) = fig.subplots(1, 3)
    a1.plot(_cpu(ws), _cpu(Js), color="0.3")
    a1.set(xlabel="w", ylabel="J(w)", title="the loss: smooth")
    a2.step(_cpu(ws), _cpu(acc), where="mid", color="tab:purple")
    a2.axvspan(float(w_fine[0]), float(w_fine[-1]), color="tab:purple", alpha=0.15)
    a2.set(xlabel="w", ylabel="accuracy", title="the metric: accuracy")
    a3.step(_cpu(w_fine), _cpu(acc_fine), where="post", color="tab:purple")
    a3.set(xlabel="w", title="accuracy, zoomed in: flat steps")
    return _done(fig, show)
