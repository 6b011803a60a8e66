"""The gradient descent explorers of lesson 2 (built once, animated with a Play button).

>>> from gradlab.widgets import DescentExplorer1D, DescentExplorer2D
>>> ex = DescentExplorer1D(lambda t: (t - 1) ** 2, theta_range=(-3.0, 5.0), start=4.0, lr=0.1)
>>> ex   # in a notebook: the plot, a readout and the controls; `%matplotlib widget` makes it smooth

Each explorer is an ``ipywidgets.VBox``. ``ex.step.value = 10`` (or Play in the browser) shows step
10; ``ex.show_step(k)`` draws one frame. See explorer1d.py and explorer2d.py for the details and
explorer_base.py for how the figure is shown under widget and non-widget matplotlib backends.
Stable CSS classes for browser tests: gradlab-explorer (and -1d / -2d), gradlab-figure, gradlab-lr,
gradlab-start (1-D) or gradlab-start-w / gradlab-start-b (2-D), gradlab-step, gradlab-play,
gradlab-readout; a diverged readout contains a span.gradlab-diverged.
"""
from .explorer1d import DescentExplorer1D
from .explorer2d import DescentExplorer2D

__all__ = ["DescentExplorer1D", "DescentExplorer2D"]
