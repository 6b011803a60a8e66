"""The gradient descent explorers of lesson 2 (built once, animated with a Play button).

>>> from gradlab.widgets import DescentExplorer1D, DescentExplorer2D
>>> ex = DescentExplorer1D(lambda t: (t - 1) ** 2, theta_range=(-3.0, 5.0), start=4.0, lr=0.1)
>>> ex   # in a notebook: the plot, a readout and the controls; `%matplotlib widget` makes it smooth

Each explorer is an ``ipywidgets.VBox``. ``ex.step.value = 10`` (or Play in the browser) shows step
10; the whole path is computed when lr or the start changes, so a frame only moves artists.
``ex.show_step(k)`` is one frame, for timing: under ipympl, once the figure has been shown, it redraws
only the moving artists over a saved copy of the rest and sends the changed pixels (blitting, a few ms;
before the first full render it asks the browser for one with ``fig.canvas.draw_idle()``); under any
other backend it renders a PNG into an ``ipywidgets.Image``, a full render (about 50 ms here). See
explorer_base.py; ``make bench`` times both explorers (benchmarks/widgets.py). Widget messages may be
handled on another thread than the cell's (JupyterLab's kernel subshells): building, frames and the
canvas's messages take ``FIGURE_LOCK`` in turn. A hidden ``ex.watch`` (figure_watch.py) reports from the
browser whether the figure shows a picture; one that stays blank is sent again, whole.
Details: explorer1d.py, explorer2d.py; the descent itself: descent.py.
Stable CSS classes for browser tests: gradlab-explorer (and -1d / -2d), gradlab-figure, gradlab-lr,
gradlab-start (1-D) or gradlab-start-w / gradlab-start-b (2-D), gradlab-step, gradlab-play,
gradlab-readout, gradlab-figure-watch (hidden); a diverged readout contains a span.gradlab-diverged.
"""
from .explorer1d import DescentExplorer1D
from .explorer2d import DescentExplorer2D

__all__ = ["DescentExplorer1D", "DescentExplorer2D"]
