"""The explorers' sliders start on their own grid, so a browser does not move them when it draws them.

A noUiSlider snaps its value to min + k·step on first draw and sends the snapped value to the kernel:
found by test_browser.py, where start 1.8 came back as 1.7975 and η = 20 as 19.95.
"""
import math

import matplotlib.pyplot as plt
import pytest

from gradlab.widgets import DescentExplorer1D, DescentExplorer2D


def steps_from_min(value, low, step):
    return (value - low) / step


def assert_on_grid_and_covering(value, low, high, step, lo, hi):
    k = steps_from_min(value, low, step)
    assert abs(k - round(k)) < 1e-6, f"{value} is {k} steps above the slider's min {low}"
    # The slider stays inside the requested range and falls short of either end by less than one step.
    assert lo - 1e-9 * step <= low < lo + step and hi - step < high <= hi + 1e-9 * step, (low, high, lo, hi)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("start, lr, theta_range, lr_range", [
    (1.8, 0.3, (-1.0, 2.0), (1e-3, 10.0)),
    (4.0, 30.0, (-5.0, 35.0), (0.3, 3000.0)),
    (-2.95, 0.07, (-3.0, 5.0), (1e-3, 10.0)),
])
def test_1d_start_and_rate_sit_on_their_slider_grids(start, lr, theta_range, lr_range):
    ex = DescentExplorer1D(lambda t: (t - 1) ** 2, theta_range=theta_range, start=start, lr=lr, lr_range=lr_range)
    assert ex.start.value == start and ex.lr.value == lr
    s = ex.start
    assert_on_grid_and_covering(start, s.min, s.max, s.step, *theta_range)
    assert_on_grid_and_covering(math.log10(lr), ex.lr.min, ex.lr.max, ex.lr.step, *map(math.log10, lr_range))


def test_2d_starts_and_rate_sit_on_their_slider_grids():
    ex = DescentExplorer2D(lambda w, b: (w - 1) ** 2 + b ** 2, w_range=(-5.0, 35.0), b_range=(-30.0, 10.0),
                           start=(1.3, -0.7), lr=20.0, lr_range=(0.1, 1000.0))
    for slider, rng in ((ex.start_w, (-5.0, 35.0)), (ex.start_b, (-30.0, 10.0))):
        assert_on_grid_and_covering(slider.value, slider.min, slider.max, slider.step, *rng)
    assert_on_grid_and_covering(math.log10(20.0), ex.lr.min, ex.lr.max, ex.lr.step, -1.0, 3.0)
