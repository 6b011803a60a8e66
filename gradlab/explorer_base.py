"""What the two descent explorers share: controls, the figure view, path recomputation, checks.

The figure is built once and every frame only moves its artists. Where it is shown depends on the
matplotlib backend:

* a widget backend (``%matplotlib widget``, ipympl): the figure's canvas *is* an ipywidget, so it is
  placed in the explorer. The artists that move are ``animated``: once the figure has been rendered in
  full (the browser asks for that when it shows it), a frame redraws only them over a saved copy of the
  rest (blitting, ``Blitter``), a fraction of a full render; before that, it asks for a full render
  with ``fig.canvas.draw_idle()``. Smooth, no flicker;
* any other backend (inline, Agg under nbclient or pytest): the explorer shows an
  ``ipywidgets.Image`` holding a PNG of the same figure, re-rendered on every frame. It still animates
  in a live kernel, only less smoothly.

The figure is a plain ``matplotlib.figure.Figure``, never registered with pyplot: no backend shows a
second, static copy of it, and pyplot's interactive mode does not ask for a picture at each change.

Two threads use the figure. JupyterLab sends widget messages to a kernel subshell (its setting
``commsOverSubshells``), which ipykernel 7 runs in a thread of its own, while cells run in the main
thread: the browser's requests for a picture, the sliders and Play are handled there, even while a
cell builds the next explorer. Matplotlib is not thread-safe (``tight_layout`` swaps a renderer's
drawing methods for no-ops for a moment; a full render clears the renderer before it locks), so
``FIGURE_LOCK`` makes building an explorer, a frame and every message to its canvas one at a time.
The widget canvas is made last, once the figure is complete, and takes the lock for its very first
message (``_locked_canvas_class``).

A hidden ``FigureWatch`` in each explorer reports from the browser whether the figure shows a
picture; when it stays blank, the explorer sends a whole picture again (``redraw``).
"""
import functools
import io
import itertools
import math
import threading

import ipywidgets as widgets
import matplotlib
import numpy as np
from matplotlib.backends import backend_registry
from matplotlib.figure import Figure

from .descent import descend
from .figure_watch import FigureWatch

DIVERGED_COLOR = "#c0392b"
LR_STEP = 0.01  # the learning-rate slider moves in steps of 10**0.01, about 2.3 %
START_STEPS = 400  # a start slider has about this many steps across its range
FIGURE_LOCK = threading.RLock()
_figure_numbers = itertools.count(1)


class Explorer(widgets.VBox):
    """Base of DescentExplorer1D/2D: a VBox of figure, readout and controls.

    Subclasses build ``self.starts`` (start sliders), then, holding ``FIGURE_LOCK``, call ``_setup``,
    draw their artists on ``self.ax`` and call ``_finish``; they implement ``_start_point()``,
    ``_draw(k)`` (move the artists for step k) and ``_readout_html(k)``. ``watch.drawn`` is what the
    browser last reported (None before any report), ``watch.redraws`` how many times a blank figure
    was sent again.
    """

    names = ("θ",)

    def _setup(self, cost, lr, lr_range, max_steps, low, high, figsize, interval):
        self.cost = cost
        self.max_steps = check_steps(max_steps)
        self._low, self._high = np.asarray(low, float), np.asarray(high, float)
        self.lr = lr_slider(lr, lr_range)
        self._recompute()  # a cost autograd cannot use fails here, before a figure exists
        self.step = widgets.IntSlider(
            value=0, min=0, max=self.max_steps, description="step k", tooltip="how many descent steps to show",
            style={"description_width": "initial"}, layout=widgets.Layout(width="420px"),
        )
        self.step.add_class("gradlab-step")
        self.play = widgets.Play(
            value=0, min=0, max=self.max_steps, interval=interval, description="play descent",
            tooltip="animate the descent one step at a time",
        )
        self.play.add_class("gradlab-play")
        # The browser moves the slider with the Play button; the kernel only hears the slider change.
        self._play_link = widgets.jslink((self.play, "value"), (self.step, "value"))
        self.readout = widgets.HTML()
        self.readout.add_class("gradlab-readout")
        self.fig = Figure(figsize=figsize)
        self.ax = self.fig.subplots()

    def _no_finite_cost(self, where):
        return ValueError(f"the cost is inf or nan everywhere on {where}: choose a range where it is defined")

    def _finish(self):
        """Show the finished figure, lay out the widgets, wire the observers and draw step 0."""
        self.watch = FigureWatch(lambda: self.redraw())
        self.view, self._refresh, self.redraw = figure_view(self.fig, self.watch.picture_sent)
        self.children = [
            self.view,
            self.readout,
            widgets.HBox([self.lr, *self.starts]),
            widgets.HBox([self.play, self.step]),
            self.watch,
        ]
        self.add_class("gradlab-explorer")
        for control in (self.lr, *self.starts):
            control.observe(self._on_params_change, names="value")
        self.step.observe(self._on_step_change, names="value")
        self.show_step(self.step.value)

    def _recompute(self):
        self.descent = descend(
            self.cost, self._start_point(), self.lr.value, self.max_steps, self._low, self._high, self.names,
        )

    def _on_params_change(self, _change):
        self._recompute()
        self.show_step(self.step.value)

    def _on_step_change(self, change):
        self.show_step(change["new"])

    def show_step(self, k):
        """Show step k of the current path: move the artists, update the readout, redraw once.

        This is one animation frame; the step slider (and so the Play button) calls it.
        """
        k = min(max(int(k), 0), self.max_steps)
        with FIGURE_LOCK:
            self._draw(k)
            self.readout.value = self._readout_html(k)
            self._refresh()

    @property
    def diverged_at(self):
        """Index of the step at which the current path diverged, or None."""
        return self.descent.diverged_at

    def _diverged_by(self, k):
        return self.descent.diverged_at is not None and k >= self.descent.diverged_at

    def _diverged_html(self, k):
        if self.descent.diverged_at == 0:
            return (
                f'<span class="gradlab-diverged" style="color:{DIVERGED_COLOR}"><b>no descent from this start</b> '
                f"({self.descent.reason}). Pick another start.</span>"
            )
        return (
            f'<span class="gradlab-diverged" style="color:{DIVERGED_COLOR}"><b>step {k}: diverged at step '
            f"{self.descent.diverged_at}</b> ({self.descent.reason}). Try a smaller learning rate.</span>"
        )


class Blitter:
    """Refreshes a widget canvas by redrawing only its animated artists over the rest, saved once.

    Every full render (the first display, a resize, a change of the browser's pixel ratio) saves the
    still part of the figure and draws the animated artists on it, which a full render leaves out.
    A frame then restores that copy, draws the animated artists and sends the picture. Until a
    full render has happened there is nothing to restore, so a frame asks for one instead.
    """

    def __init__(self, fig):
        self.fig, self.canvas = fig, fig.canvas
        self.background = None
        self.canvas.mpl_connect("draw_event", self._on_full_draw)

    def _moving(self):
        return [a for ax in self.fig.axes for a in ax.get_children() if a.get_animated()]

    def _on_full_draw(self, _event):
        if self.canvas.is_saving():  # savefig draws the animated artists itself, into its own image
            return
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)
        for artist in self._moving():
            self.fig.draw_artist(artist)

    def __call__(self):
        if self.background is None:
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self.background)
        for artist in self._moving():
            self.fig.draw_artist(artist)
        self.canvas.blit(self.fig.bbox)


def figure_view(fig, picture_sent=lambda: None):
    """The widget that shows ``fig``, the function that refreshes it after artists moved, and the one that
    sends it to the browser again whole (for a view that stayed blank). ``picture_sent()`` is called for
    every picture sent. Call it holding FIGURE_LOCK."""
    backend = backend_registry.load_backend_module(matplotlib.get_backend())
    canvas_class = getattr(backend, "FigureCanvas", None)
    if isinstance(canvas_class, type) and issubclass(canvas_class, widgets.DOMWidget):
        canvas = _locked_canvas_class(canvas_class)(fig)
        backend.FigureManager(canvas, next(_figure_numbers))
        canvas.header_visible = False
        canvas.footer_visible = False
        canvas.add_class("gradlab-figure")
        _sized_before_display(canvas)
        _whole_images(canvas, picture_sent)

        def redraw():
            with FIGURE_LOCK:
                canvas.manager.resize(*fig.bbox.size)  # gives a view that lost its size the figure's again
                canvas.draw()  # a full render, sent whether or not the browser asked for one

        return canvas, Blitter(fig), redraw
    image = widgets.Image(format="png")
    image.add_class("gradlab-figure")

    def refresh():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        image.value = buffer.getvalue()
        picture_sent()

    def redraw():
        with FIGURE_LOCK:
            refresh()
            image.send_state("value")  # an unchanged value would not be sent again

    return image, refresh, redraw


@functools.cache
def _locked_canvas_class(canvas_class):
    """ipympl's canvas, handling the browser's messages (draw, refresh, resize, toolbar) under FIGURE_LOCK.

    They arrive on the widget subshell's thread: a draw request answered while a cell still built the
    figure rendered it half-built, or blank (2 of 60 displays of lesson 2's 2-D explorer on a busy
    machine), and nothing asked for a picture again. The canvas registers this handler when it is made,
    so even its first message waits for the lock.
    """

    class LockedCanvas(canvas_class):
        def _handle_message(self, *args):
            with FIGURE_LOCK:
                return super()._handle_message(*args)

    return LockedCanvas


def _sized_before_display(canvas):
    """Give an ipympl canvas its size before the browser draws it, as displaying it on its own would.

    ipympl sets the size in ``_repr_mimebundle_``, which a canvas inside a box never goes through; its
    view then starts 0 pixels high and waits for a resize exchange with the kernel, and when that fails
    in the browser the figure stays blank (ipympl issue #472).
    """
    width, height = canvas.figure.bbox.size
    canvas._size = (width / canvas.device_pixel_ratio, height / canvas.device_pixel_ratio)


def _whole_images(canvas, picture_sent):
    """Make every picture an ipympl canvas sends whole, not the difference from the one before.

    ipympl's front end loads each picture as it arrives and abandons one still loading when the next
    arrives. An abandoned difference is lost for good: when a whole picture is followed at once by a
    difference (it happened in 3 of 15 displays of an explorer on a busy machine), the figure
    stays blank; during Play, stale marks remain. A whole picture makes an abandoned one harmless; it
    costs a larger PNG per frame (see benchmarks/widgets.py).
    """
    diff_image = canvas.get_diff_image

    def whole_image():
        canvas._force_full = True  # matplotlib's web canvas: the next picture is a whole one
        picture = diff_image()
        if picture is not None:
            picture_sent()
        return picture

    canvas.get_diff_image = whole_image


def lr_slider(lr, lr_range):
    lo, hi = check_range("lr_range", lr_range)
    if lo <= 0:
        raise ValueError(f"lr_range must be positive (the slider is logarithmic); got {lr_range!r}")
    lr = check_inside("lr", lr, lo, hi)
    low, high = grid_through(math.log10(lr), math.log10(lo), math.log10(hi), LR_STEP)
    slider = widgets.FloatLogSlider(
        value=lr, base=10, min=low, max=high, step=LR_STEP, description="learning rate η",
        readout_format=".3g", tooltip="step size η (logarithmic scale)",
        style={"description_width": "initial"}, layout=widgets.Layout(width="420px"),
    )
    slider.add_class("gradlab-lr")
    return slider


def start_slider(description, value, lo, hi, css_class):
    step = (hi - lo) / START_STEPS
    low, high = grid_through(value, lo, hi, step)
    slider = widgets.FloatSlider(
        value=value, min=low, max=high, step=step, description=description, readout_format=".3g",
        tooltip="where the descent starts", style={"description_width": "initial"},
    )
    slider.add_class(css_class)
    return slider


def grid_through(value, lo, hi, step):
    """Slider bounds within [lo, hi] whose grid (min + k·step) passes through ``value``.

    A browser slider snaps its value to that grid when it is drawn and sends the snapped value back to
    the kernel: on a grid anchored at ``lo`` a start of 1.8 became 1.7975 and η = 20 became 19.95.
    """
    below = math.floor((value - lo) / step + 1e-9)
    above = math.floor((hi - value) / step + 1e-9)
    return value - below * step, value + above * step


def check_range(name, pair):
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (low, high); got {pair!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high; got {pair!r}")
    return lo, hi


def check_inside(name, value, lo, hi):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r} is outside its range [{lo:g}, {hi:g}]")
    return value


def check_steps(max_steps):
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or not 1 <= max_steps <= 10_000:
        raise ValueError(f"max_steps must be a whole number from 1 to 10000; got {max_steps!r}")
    return int(max_steps)


def clip_to_box(point, lo, hi):
    """``point`` clipped into the box [lo, hi] and whether it had to be."""
    clipped = np.clip(point, lo, hi)
    return clipped, bool(np.any(clipped != point))


def num(value):
    """A number for the readout: 4 significant digits, plain ASCII so tests can parse it back."""
    return f"{value:.4g}"
