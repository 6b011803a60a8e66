"""Milliseconds per animation frame of lesson 2's two descent explorers under ipympl, headless.

Run as its own process (``python -m benchmarks.widgets``, JSON on stdout) so that the widget backend
does not leak into the rest of the benchmark. The explorers are lesson 2's own (its cost on the cell
data, its ranges, starts and rates: benchmarks/lesson_code.py builds them from the notebook).

One frame is what the kernel does for one step of Play in JupyterLab:
1. the callback: the step slider's observer moves the artists, updates the readout and refreshes the
   figure. Once the figure has been rendered in full, the refresh is a blit (gradlab/explorer_base.py,
   ``Blitter``): the saved still part is restored, the moving artists are drawn with Agg and the whole
   picture is encoded as a PNG for the browser (whole, not the changed pixels: see
   ``_whole_images`` in gradlab/explorer_base.py). Before that, it is ipympl's ``draw_idle``, which only
   sends a "draw" request to the browser;
2. any full render the browser then asks for: ipympl's ``canvas.draw()`` (the whole figure with Agg,
   then its PNG), called here at once, as if the browser answered instantly.
The network, the browser's decoding and painting are not included. The canvas is told that the front
end is there (its "initialized" message), so it sends PNG images as in a live session, not a data URL
as it does with no browser. The first full render, when the explorer is shown, is not a frame.
After the timing, the blitted figure is compared pixel by pixel with a full render of the same step.
"""
import argparse
import json
import statistics
import sys
import time

import matplotlib
import numpy as np

LESSON_NAMES = ["device", "X", "x", "y", "cost", "B_FIXED", "explorer_1d", "explorer_2d"]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class BrowserStandIn:
    """Answers the canvas's redraw requests the way ipympl's front end does: one canvas.draw() per request."""

    def __init__(self, canvas):
        self.canvas = canvas
        self.pending = False
        canvas._handle_message(canvas, {"type": "initialized"}, [])
        send_json = canvas.send_json

        def to_browser(content):  # draw_idle reaches the browser as a {"type": "draw"} message
            if content.get("type") == "draw":
                self.pending = True
            send_json(content)

        canvas.send_json = to_browser

    def answer(self):
        if self.pending:
            self.pending = False
            self.canvas.draw()


def plain_render(fig):
    """The figure's pixels rendered in full with nothing animated, so without the explorer's Blitter."""
    moving = [a for ax in fig.axes for a in ax.get_children() if a.get_animated()]
    for artist in moving:
        artist.set_animated(False)
    try:
        fig.canvas.draw()
        return np.array(fig.canvas.buffer_rgba())
    finally:
        for artist in moving:
            artist.set_animated(True)


def time_frames(explorer, steps, repeats):
    browser = BrowserStandIn(explorer.fig.canvas)
    browser.answer()  # the first full draw happens when the explorer is displayed, before any Play
    frames, callbacks, draws = [], [], []
    for _ in range(repeats):
        for k in range(1, steps + 1):
            start = time.perf_counter()
            explorer.step.value = k
            called = time.perf_counter()
            browser.answer()
            done = time.perf_counter()
            frames.append(done - start)
            callbacks.append(called - start)
            draws.append(done - called)
        explorer.step.value = 0
        browser.answer()
    explorer.step.value = steps // 2
    browser.answer()
    blitted = np.array(explorer.fig.canvas.buffer_rgba())
    ms = 1000
    return {
        "frame_ms_median": ms * statistics.median(frames),
        "frame_ms_p95": ms * percentile(frames, 95),
        "callback_ms_median": ms * statistics.median(callbacks),
        "draw_ms_median": ms * statistics.median(draws),
        "frames": len(frames),
        "frame_matches_full_render": bool(np.array_equal(blitted, plain_render(explorer.fig))),
    }


def measure(max_steps=None, repeats=2):
    matplotlib.use("module://ipympl.backend_nbagg")
    from ipympl.backend_nbagg import Canvas

    from benchmarks import lesson_code

    lesson2 = lesson_code.load("02", LESSON_NAMES)
    result = {"backend": matplotlib.get_backend(), "repeats": repeats}
    for key, explorer in (("gd1d", lesson2["explorer_1d"]), ("gd2d", lesson2["explorer_2d"])):
        if not isinstance(explorer.fig.canvas, Canvas):
            raise RuntimeError(f"the explorer's canvas is {type(explorer.fig.canvas)}, not ipympl's")
        steps = explorer.max_steps if max_steps is None else min(max_steps, explorer.max_steps)
        for name, value in time_frames(explorer, steps, repeats).items():
            result[f"{key}_{name}"] = value
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=None, help="animate only the first steps (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="times each animation is played (default: 2)")
    args = parser.parse_args(argv)
    json.dump(measure(args.max_steps, args.repeats), sys.stdout)


if __name__ == "__main__":
    main()
