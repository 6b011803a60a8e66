"""Lesson 2 as a student meets it: JupyterLab in headless Chromium, the explorers moving, nbgrader's Validate.

`pytest -m browser` selects this. It needs Debian's Chromium (/usr/bin/chromium) and the playwright
package; without Chromium it is skipped, except in CI (CI set), where that is a failure. Screenshots of
every step go to artifacts/browser/<test name>/ together with the server log and the browser console.
"""
import re
import shutil
import time
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect, sync_playwright

from browser_helpers import (
    ARTIFACTS, LabNotebook, Shots, chromium, chromium_or_skip, code_cell_index, drawn, jupyter_lab,
    wait_until,
)
from course import NOTEBOOKS, Course

pytestmark = pytest.mark.browser

LESSON = "02-gradient-descent"
NOTEBOOK = "gradient-descent.ipynb"
MARK_1D = "# 1-D gradient descent explorer"
MARK_2D = "# 2-D gradient descent explorer"
BUDGET_S = 120
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture
def lab(request, tmp_path, capsys):
    """JupyterLab serving a course folder with lesson 2's student version (release/) and its solved source
    (solved/), a Chromium page on it, the screenshots and the browser's console messages so far.
    Server and browser are stopped afterwards, whatever happened."""
    browser_path = chromium_or_skip()
    shots = Shots(ARTIFACTS / request.node.name)
    course = Course(tmp_path / "course")
    shutil.copytree(NOTEBOOKS / LESSON, course.root / "solved" / LESSON)
    console = []
    try:
        # nbgrader writes the student version (no gradebook needed) while the server and the browser start.
        with ThreadPoolExecutor(1) as pool:
            released = pool.submit(course.nbgrader, "generate_assignment", LESSON, "--force", "--no-db")
            with jupyter_lab(course.root, course.root, tmp_path / "lab-state", shots.folder / "server.log") as server, \
                    sync_playwright() as playwright, chromium(playwright, browser_path) as browser:
                released.result()
                server.wait_ready()
                shots.note("server, student version and browser ready")
                page = browser.new_page(viewport=VIEWPORT)
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                yield SimpleNamespace(server=server, page=page, shots=shots, console=console)
    finally:
        (shots.folder / "console.log").write_text("\n".join(console) + "\n")
        with capsys.disabled():
            print(f"\n[browser] {time.monotonic() - shots.started:.1f} s; screenshots, server log and console in {shots.folder}")


def readout(explorer):
    """(step, [the numbers after each '=']) of an explorer's readout."""
    text = explorer.locator(".gradlab-readout").inner_text()
    step = re.search(r"step (\d+)", text)
    assert step, f"no step number in the readout: {text!r}"
    return int(step.group(1)), [float(v) for v in re.findall(r"= (-?\d[\d.]*(?:e[-+]?\d+)?)", text)]


def press(locator, key, times=1):
    """Focus a slider handle and press a key on it, as a keyboard user moves a slider."""
    locator.focus()
    for _ in range(times):
        locator.press(key)


def figure(explorer):
    return explorer.locator(".gradlab-figure").first


def expect_rendered(notebook, index, explorer_class, controls):
    """The explorer of cell ``index``: drawn by the widget manager with all its controls, no fallback."""
    cell = notebook.cell(index)
    explorer = cell.locator(f".{explorer_class}")
    expect(explorer, f"cell {index} shows no .{explorer_class}").to_be_visible(timeout=20_000)
    texts = notebook.outputs(index).all_inner_texts()
    assert not any("Error displaying widget" in t for t in texts), texts
    # The text/plain repr ("DescentExplorer1D(children=...") is what JupyterLab shows when it cannot draw a widget.
    expect(cell.locator(".jp-OutputArea-output[data-mime-type='text/plain']")).to_have_count(0)
    for css in controls:
        expect(explorer.locator(f".{css}"), f"missing control .{css}").to_be_visible()
    expect(explorer.locator(".gradlab-play button").first).to_be_visible()
    # ipympl shows an empty canvas until the first image arrives from the kernel.
    wait_until(lambda: drawn(figure(explorer).screenshot()), 20,
               lambda: f"the figure of cell {index} stays blank (box {figure(explorer).bounding_box()})")
    return explorer


def expect_step(explorer, step, timeout=10_000):
    expect(explorer.locator(".gradlab-readout")).to_contain_text(f"step {step}", timeout=timeout)


def new_frame(explorer, old, timeout=10):
    """The figure's pixels once they differ from ``old`` (the kernel redraws a moment after a change)."""
    return wait_until(lambda: (png := figure(explorer).screenshot()) != old and png, timeout,
                      lambda: f"the figure did not change within {timeout} s")


def play_and_check(page, explorer, shots, label):
    """Press Play: the readout's step and the figure must both move on; then pause."""
    before = shots.element(figure(explorer), f"{label}-before-play")
    play = explorer.locator(".gradlab-play button").first
    steps = [readout(explorer)[0]]
    play.click()
    new_frame(explorer, before)
    for _ in range(5):
        page.wait_for_timeout(300)
        steps.append(readout(explorer)[0])
    shots.element(figure(explorer), f"{label}-playing")
    play.click()  # the same button pauses
    assert steps[-1] > steps[0] and steps == sorted(steps), f"Play did not advance the step steadily: {steps}"
    # The kernel may lag a frame or two behind the browser; once paused, the readout catches up with the slider.
    slider = explorer.locator(".gradlab-step .widget-readout")
    wait_until(lambda: readout(explorer)[0] == int(slider.inner_text()), 10,
               lambda: f"readout at step {readout(explorer)[0]}, slider at {slider.inner_text()}")
    shots.element(explorer, f"{label}-paused")


def check_learning_rate_slider(explorer, shots):
    """A smaller rate (keyboard on the log slider) redraws the path and reaches the kernel's readout."""
    lr_shown = explorer.locator(".gradlab-lr .widget-readout")
    lr_before = float(lr_shown.inner_text())
    frame_before = figure(explorer).screenshot()
    press(explorer.locator(".gradlab-lr .noUi-handle"), "ArrowLeft", 15)
    lr = float(lr_shown.inner_text())
    assert lr < lr_before, f"ArrowLeft did not lower the learning rate: {lr_before} -> {lr}"
    new_frame(explorer, frame_before)

    def kernel_caught_up():
        # next θ = θ − η·slope with the η the slider shows (3 significant digits there, 4 in the readout)
        step, numbers = readout(explorer)
        if len(numbers) < 4:  # a diverged path's readout has no slope to check
            return False
        theta, _, slope, next_theta = numbers[:4]
        return step == 3 and abs(next_theta - (theta - lr * slope)) <= 1e-2 * abs(lr * slope) + 1e-3

    wait_until(kernel_caught_up, 10, lambda: f"the readout does not use η = {lr}: {readout(explorer)}")
    shots.element(explorer, "explorer-1d-smaller-lr")


@pytest.mark.timeout(BUDGET_S)
def test_lesson_2_explorers_and_validate_in_jupyterlab(lab):
    server, page, shots = lab.server, lab.page, lab.shots
    student = f"release/{LESSON}/{NOTEBOOK}"
    i1 = code_cell_index(server.root_dir / student, MARK_1D)
    i2 = code_cell_index(server.root_dir / student, MARK_2D)

    notebook = LabNotebook.open(page, server, student)
    shots.page(page, "student-version-open")
    expect(notebook.panel.locator(".validate-button"), "nbgrader's Validate button is missing").to_be_visible()

    # 1-D explorer: renders, the step and learning-rate sliders move the plot, Play animates.
    notebook.run_cells(0, i1)
    one = expect_rendered(notebook, i1, "gradlab-explorer-1d", ["gradlab-lr", "gradlab-start", "gradlab-step"])
    one.scroll_into_view_if_needed()
    shots.page(page, "explorer-1d-rendered")
    expect_step(one, 0)

    press(one.locator(".gradlab-step .noUi-handle"), "ArrowRight", 3)
    expect_step(one, 3)
    shots.element(one, "explorer-1d-step-3")
    check_learning_rate_slider(one, shots)

    play_and_check(page, one, shots, "explorer-1d")

    # 2-D explorer: the cells after the 1-D one, up to it.
    notebook.run_cells(i1 + 1, i2)
    two = expect_rendered(notebook, i2, "gradlab-explorer-2d",
                          ["gradlab-lr", "gradlab-start-w", "gradlab-start-b", "gradlab-step"])
    two.scroll_into_view_if_needed()
    shots.page(page, "explorer-2d-rendered")
    expect_step(two, 0)
    play_and_check(page, two, shots, "explorer-2d")
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    # A view that fails to render is logged as a console error; an uncaught exception as a page error.
    errors = [m for m in lab.console if m.startswith(("error:", "pageerror:"))]
    assert not errors, "the browser reported errors:\n" + "\n".join(errors)

    slowest = sorted(notebook.durations.items(), key=lambda item: -item[1])[:3]
    shots.note("slowest cells: " + ", ".join(f"{i} ({t:.1f} s)" for i, t in slowest))

    # Validate: the solved lesson (the nbgrader source) passes every test.
    solved = LabNotebook.open_from_path(page, server, f"solved/{LESSON}/{NOTEBOOK}")
    solved.panel.locator(".validate-button").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_be_visible(timeout=90_000)
    shots.page(page, "validate-solved")
    expect(dialog.locator("#validation-message")).to_have_class(re.compile("validation-success"))
    expect(dialog).to_contain_text("Success! Your notebook passes all the tests.")
