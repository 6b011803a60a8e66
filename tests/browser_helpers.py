"""Drive JupyterLab in headless Chromium: start a server, open a notebook, run its cells, take screenshots.

Used by test_browser.py. The server runs from the project's environment (this interpreter) on 127.0.0.1,
a free port and a random token, with its own settings, workspace and runtime folders so that nothing of
the machine's own Jupyter setup leaks in. Both server and browser are stopped in ``finally`` blocks.
"""
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import pytest
from playwright.sync_api import expect

from course import errors, is_graded_test

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps calling home, which on a closed network means a flood of
# refused connections; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
# The lab's news and update checks would reach for the internet and put a toast over the screenshots.
# Notebooks attach all their cells at once: by default they attach them in the browser's idle time, and on a
# busy machine a 62-cell lesson still lacked 6 after 30 s, while the tests find cells by position.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def chromium_or_skip():
    """Path of Debian's Chromium; skip without it, except in CI, where a missing browser is a failure."""
    if CHROMIUM.is_file():
        return str(CHROMIUM)
    how = "install it with `apt-get update && apt-get install -y chromium` (.ci/run does this)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{CHROMIUM} is missing, so the browser tests cannot run in CI; {how}", pytrace=False)
    pytest.skip(f"{CHROMIUM} not found; {how}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A started JupyterLab: ``wait_ready()`` until it answers, ``url(path)`` gives an address with the token,
    ``log()`` its output so far."""

    def __init__(self, process, port, token, root_dir, log_path):
        self.process, self.port, self.token = process, port, token
        self.root_dir, self.log_path = Path(root_dir), Path(log_path)

    def url(self, path=""):
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path, method="GET"):
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self):
        """End every session and its kernel, so that the next notebook does not share the CPU with them."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    if response.status == 200 and "started" in json.load(response):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"JupyterLab did not answer /api/status within {timeout} s:\n{self.log()}")
            time.sleep(0.25)


@contextmanager
def jupyter_lab(root_dir, cwd, state_dir, log_path, environment=None):
    """Start JupyterLab serving ``root_dir`` and stop it when the block ends, however it ends.

    It boots while the block goes on: call ``wait_ready()`` on the server before using it.

    ``cwd`` is where the server runs: nbgrader's Validate button reads nbgrader_config.py from there.
    ``state_dir`` gets the server's private config, settings, workspaces and runtime folders.
    ``environment`` adds variables for the server and its kernels.
    """
    state_dir = Path(state_dir)
    settings = state_dir / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = {
        **os.environ,
        # nbgrader and the kernel find the project's tools first, as under `make lab`.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(state_dir / "config"),
        "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "workspaces"),
        "IPYTHONDIR": str(state_dir / "ipython"),
        **(environment or {}),
    }
    env.pop("MPLBACKEND", None)  # the kernel should pick matplotlib's backend as a student's kernel does
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root_dir}", "--ServerApp.port_retries=0",
    ]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        # A session of its own, so that stopping it reaches every process it forked.
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = LabServer(process, port, token, root_dir, log_path)
    try:
        yield server
    finally:
        stop(process)


def stop(process):
    """Stop the server: SIGTERM (it shuts its kernels down), SIGKILL if it lingers.

    Kernels run in sessions of their own but poll their parent's pid (JPY_PARENT_PID), so even after a
    SIGKILL they exit by themselves.
    """
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def chromium(playwright, executable):
    """A headless Chromium, closed when the block ends."""
    browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


class Shots:
    """Numbered screenshots in one artifacts folder, and timeline.txt saying when each was taken."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.started = time.monotonic()
        self.timeline = []
        self.count = 0

    def note(self, event):
        self.timeline.append(f"{time.monotonic() - self.started:6.1f} s  {event}")
        (self.folder / "timeline.txt").write_text("\n".join(self.timeline) + "\n")

    def path(self, name):
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        self.note(path.name)
        return path

    def page(self, page, name):
        page.screenshot(path=self.path(name))

    def element(self, locator, name):
        """Screenshot of one element; returns the PNG bytes, e.g. to compare two frames."""
        return locator.screenshot(path=self.path(name))


def drawn(png, min_ink=0.005):
    """Whether a screenshot shows a drawing: more than ``min_ink`` of its pixels are not near-white."""
    rgb = plt.imread(io.BytesIO(png))[..., :3]
    return float((rgb.min(axis=2) < 0.9).mean()) > min_ink


def wait_until(check, timeout, message):
    """Poll ``check()`` until it returns something truthy and return that; fail with ``message()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.1)


def code_cell_index(notebook_path, first_line):
    """Index (among all cells) of the code cell whose source starts with ``first_line``."""
    nb = nbformat.read(notebook_path, as_version=4)
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.lstrip().startswith(first_line)]
    if len(found) != 1:
        raise AssertionError(f"{notebook_path}: expected one code cell starting with {first_line!r}, found {found}")
    return found[0]


# Each cell's prompt: "[3]:" once run, "[*]:" while running or queued, "[ ]:" never run; None for markdown.
PROMPTS_JS = """(panel) => [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell =>
    cell.classList.contains('jp-CodeCell') ? cell.querySelector('.jp-InputArea-prompt').textContent : null)"""

# The pictures in the cells' outputs (inline images, ipywidgets.Image, ipympl canvases), in document order:
# {cell, kind, width, height, ink}, ink being the share of sampled pixels that are opaque and not near-white
# (null while an image is still loading).
PICTURES_JS = """(panel) => {
  const ink = (source, width, height) => {
    if (!width || !height) return 0;
    let data;
    if (source instanceof HTMLCanvasElement) {
      data = source.getContext('2d').getImageData(0, 0, width, height).data;
    } else {
      const copy = Object.assign(document.createElement('canvas'), {width, height});
      copy.getContext('2d').drawImage(source, 0, 0);
      data = copy.getContext('2d').getImageData(0, 0, width, height).data;
    }
    let inked = 0, seen = 0;
    for (let i = 0; i < data.length; i += 16, seen++) {
      if (data[i + 3] > 128 && Math.min(data[i], data[i + 1], data[i + 2]) < 230) inked++;
    }
    return inked / seen;
  };
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')];
  return cells.flatMap((cell, index) =>
    [...cell.querySelectorAll(PICTURE_SELECTOR)].map(element => {
      const picture = element.tagName === 'IMG' ? element : element.querySelector('canvas');
      const loaded = picture.tagName !== 'IMG' || (picture.complete && picture.naturalWidth > 0);
      const width = picture.tagName === 'IMG' ? picture.naturalWidth : picture.width;
      const height = picture.tagName === 'IMG' ? picture.naturalHeight : picture.height;
      return {cell: index, kind: picture.tagName.toLowerCase(), width, height,
              ink: loaded ? ink(picture, width, height) : null};
    }));
}"""
PICTURE_SELECTOR = ".jp-OutputArea-output img, .jp-OutputArea-output .jupyter-matplotlib-canvas-div"
PICTURES_JS = PICTURES_JS.replace("PICTURE_SELECTOR", repr(PICTURE_SELECTOR))

# Widget outputs (the widget renderer, unlike the others, leaves data-mime-type unset): {cell, drawn (the
# view rendered something), error (the widget manager's "Error displaying widget")}.
WIDGETS_JS = """(panel) => [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].flatMap((cell, index) =>
  [...cell.querySelectorAll('.jp-OutputArea-output:not([data-mime-type])')]
    .map(output => ({cell: index, drawn: output.querySelector(':scope > .lm-Widget') !== null && output.offsetHeight > 0,
                     error: output.textContent.includes('Error displaying widget')})))"""

# Records every picture shown in an output while the page lives: {cell, hash of its source, running (the
# cell's prompt was [*] then)}, in window.gradlabPictures. A live plot that redraws shows several.
RECORD_PICTURES_JS = """(panel) => {
  const seen = window.gradlabPictures = [];
  const hash = text => { let h = 2166136261; for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619); return h >>> 0; };
  const note = image => {
    const cell = image.closest('.jp-Cell');
    if (!cell || !image.src) return;
    const index = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].indexOf(cell);
    const prompt = cell.querySelector('.jp-InputArea-prompt');
    seen.push({cell: index, picture: hash(image.src), running: prompt !== null && prompt.textContent === '[*]:'});
  };
  new MutationObserver(records => records.forEach(record => {
    if (record.type === 'attributes') return note(record.target);
    record.addedNodes.forEach(node => {
      if (node.nodeType !== 1) return;
      if (node.tagName === 'IMG') note(node);
      node.querySelectorAll('img').forEach(note);
    });
  })).observe(panel, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


class LabNotebook:
    """One notebook open in JupyterLab, driven as a student drives it: click a cell, press Shift+Enter, or
    Run All from the menu."""

    def __init__(self, page, path, panel, cells_on_disk):
        self.page, self.path, self.panel = page, path, panel
        self.kinds = [c.cell_type for c in cells_on_disk]
        self.sources = [c.source for c in cells_on_disk]
        self.durations = {}  # seconds each code cell took to run, prompt to prompt

    @classmethod
    def open(cls, page, server, relative_path, timeout=30_000):
        """Load JupyterLab with just ``relative_path`` (inside the server's root) open, every cell shown and
        the kernel idle, ready to run cells."""
        # `reset` drops any saved workspace, so exactly this notebook is open.
        page.goto(server.url(f"lab/tree/{relative_path}?reset"))
        notebook = cls._tab(page, server, relative_path, timeout)
        expect(notebook.cells()).to_have_count(len(notebook.kinds), timeout=timeout)
        notebook.wait_for_kernel_idle(timeout)
        # A dialog here (no kernel, a file error) would swallow every click that follows.
        dialogs = page.locator(".jp-Dialog")
        assert dialogs.count() == 0, f"JupyterLab opened {relative_path} with a dialog: {dialogs.all_inner_texts()}"
        return notebook

    @classmethod
    def open_in_lab(cls, page, server, relative_path, timeout=30_000):
        """Open ``relative_path`` in the lab already loaded (File ▸ Open from Path…), with every cell shown and
        the kernel idle, ready to run cells."""
        notebook = cls.open_from_path(page, server, relative_path, timeout)
        expect(notebook.cells()).to_have_count(len(notebook.kinds), timeout=timeout)
        notebook.wait_for_kernel_idle(timeout)
        dialogs = page.locator(".jp-Dialog")
        assert dialogs.count() == 0, f"JupyterLab opened {relative_path} with a dialog: {dialogs.all_inner_texts()}"
        return notebook

    @classmethod
    def open_from_path(cls, page, server, relative_path, timeout=30_000):
        """Open another notebook in the lab already loaded, with File ▸ Open from Path…, for its toolbar:
        this does not wait for its cells or its kernel."""
        page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="File").click()
        page.locator(".lm-Menu-item[data-command='filebrowser:open-path']").click()
        page.locator(".jp-Dialog input").fill(relative_path)
        page.keyboard.press("Enter")
        return cls._tab(page, server, relative_path, timeout)

    @classmethod
    def _tab(cls, page, server, relative_path, timeout):
        """The notebook in the tab of ``relative_path``, once that tab is the visible one."""
        cells = nbformat.read(server.root_dir / relative_path, as_version=4).cells
        # The tab's tooltip names the file's path; its data-id is the id of the panel showing the notebook.
        # (Two notebooks may share a file name, and a hidden panel can still match ":visible" for a moment.)
        tab = page.locator(f".lm-DockPanel-tabBar .lm-TabBar-tab[title*='Path: {relative_path}']")
        expect(tab, f"no tab for {relative_path}").to_have_count(1, timeout=timeout)
        panel = page.locator(f"[id='{tab.get_attribute('data-id')}']")
        expect(panel).to_be_visible(timeout=timeout)
        return cls(page, relative_path, panel, cells)

    def cells(self):
        return self.panel.locator(".jp-Notebook .jp-Cell")

    def cell(self, index):
        return self.cells().nth(index)

    def wait_for_kernel_idle(self, timeout=30_000):
        self.panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=timeout)

    def select(self, index):
        """Make cell ``index`` the active cell, in command mode."""
        cell = self.cell(index)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputPrompt").first.click()
        self.page.keyboard.press("Escape")

    def run_cells(self, first, last, timeout_per_cell=60_000):
        """Run cells first..last one by one, as a student does: Shift+Enter, and wait for each code cell.

        One cell at a time, so a failing test cell in the student version does not cancel the cells after it.
        """
        self.select(first)
        for i in range(first, last + 1):
            self._run_active(i, timeout_per_cell)

    def _run_active(self, index, timeout):
        cell = self.cell(index)
        # Shift+Enter moves the selection on; were the focus lost, the next key would go nowhere.
        expect(cell, f"cell {index} is not the active cell").to_have_class(re.compile(r"\bjp-mod-active\b"),
                                                                          timeout=5_000)
        started = time.monotonic()
        self.page.keyboard.press("Shift+Enter")
        if self.kinds[index] == "code":
            # The prompt reads [*] while the cell waits or runs, [n] once it has run.
            expect(cell.locator(".jp-InputArea-prompt").first, f"cell {index} did not finish").to_have_text(
                re.compile(r"^\[\d+\]:$"), timeout=timeout)
            self.durations[index] = time.monotonic() - started

    def outputs(self, index):
        return self.cell(index).locator(".jp-OutputArea-output")

    def menu(self, menu, command):
        """Click ``menu`` in the menu bar, then its item for ``command``."""
        self.page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(f"^{menu}$")).click()
        self.page.locator(f".lm-Menu-item[data-command='{command}']").click()

    def prompts(self):
        return self.panel.evaluate(PROMPTS_JS)

    def run_all(self, timeout):
        """Run ▸ Run All Cells; each time a cell raises (the kernel then skips the cells after it), Run ▸ Run
        Selected Cell and All Below from the next cell, as a student reading past an error does.

        Returns the indices of the cells that stopped a run. Fails when the cells are not done in ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        stops, first = [], next(i for i, kind in enumerate(self.kinds) if kind == "code")

        def run_below(index):
            self.select(index)
            self.menu("Run", "notebook:run-all-below")

        self.menu("Run", "runmenu:run-all")
        prompts = self._wait_for_run(first, deadline, again=lambda: self.menu("Run", "runmenu:run-all"))
        while True:
            left = [i for i, p in enumerate(prompts) if p == "[ ]:" and self.sources[i].strip()]
            if not left:
                return stops
            assert left[0] > first, f"cell {first} was run again and did not start: {prompts[first]}"
            stops.append(max(i for i, p in enumerate(prompts[:left[0]]) if p and p != "[ ]:"))
            first = left[0]
            run_below(first)
            prompts = self._wait_for_run(first, deadline, again=lambda: run_below(first))

    def _wait_for_run(self, first, deadline, again=None, patience=15):
        """The prompts once the run that starts at cell ``first`` has started and no cell is running or queued.

        ``again`` asks once more when, ``patience`` s after the first ask, nothing has started and nothing is
        queued: on a busy machine JupyterLab now and then drops a menu command (seen once in ~20 runs, lesson 6)."""
        asked = time.monotonic()
        while True:
            prompts = self.prompts()
            if prompts[first] != "[ ]:" and "[*]:" not in prompts:
                return prompts
            if again is not None and "[*]:" not in prompts and time.monotonic() - asked > patience:
                again()
                again = None
            if time.monotonic() > deadline:
                running = [i for i, p in enumerate(prompts) if p == "[*]:"]
                raise AssertionError(f"{self.path}: cells {running[:5]} still running or queued, or cell {first} "
                                     f"never started ({prompts[first]})")
            time.sleep(0.2)

    def save(self, server):
        """File ▸ Save Notebook, and the notebook read back from disk with the outputs JupyterLab shows."""
        path = server.root_dir / self.path
        before = path.stat().st_mtime_ns

        def saved():
            if path.stat().st_mtime_ns == before:
                return None
            try:  # the server may still be writing it
                return nbformat.read(path, as_version=4)
            except (nbformat.reader.NotJSONError, ValueError):
                return None

        self.menu("File", "docmanager:save")
        return wait_until(saved, 30, lambda: f"{self.path} was not saved")

    def pictures(self):
        return self.panel.evaluate(PICTURES_JS)

    def picture_locators(self, index):
        return self.cell(index).locator(PICTURE_SELECTOR)

    def widget_views(self):
        return self.panel.evaluate(WIDGETS_JS)

    def record_pictures(self):
        """From now on, note each picture that appears in an output (``recorded_pictures()``)."""
        self.panel.evaluate(RECORD_PICTURES_JS)

    def recorded_pictures(self):
        return self.page.evaluate("() => window.gradlabPictures || []")


# ---- what a lesson run in the browser must show ----------------------------------------------------------

STUB_MESSAGE = "Replace this line with your solution"  # grader/nbgrader_config.py's code stub
MIN_INK = 0.002  # a picture: more than 0.2 % of its pixels opaque and not near-white
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def error_cells(nb):
    """Each error output of a saved notebook, as 'cell i: Name: message' and the cell's first line."""
    return [describe_error(i, cell, out) for i, cell, out in errors(nb)]


def describe_error(index, cell, out):
    first_line = (cell.source.strip().splitlines() or [""])[0]
    return f"cell {index}: {out.ename}: {out.evalue[:300]}\n    ({first_line[:100]})"


def check_student_errors(nb):
    """The cells where an exercise's stub raised its NotImplementedError, in order. Fails when anything else
    raised outside the graded test cells (their failing is expected) or when no stub raised at all."""
    stubs, unexpected = [], []
    for i, cell, out in errors(nb):
        if out.ename == "NotImplementedError" and STUB_MESSAGE in out.evalue:
            stubs.append(i)
        elif not is_graded_test(cell):
            unexpected.append(describe_error(i, cell, out))
    assert not unexpected, ("lesson content: the student version raises outside the exercises and the graded "
                            "tests:\n" + "\n".join(unexpected))
    assert stubs, f"no exercise stub raised NotImplementedError({STUB_MESSAGE!r}...)"
    return sorted(set(stubs))


def check_pictures_drawn(notebook, saved, shots, screenshots, timeout=30):
    """Every picture in the outputs shows something (waiting up to ``timeout`` s for late ones) and every
    widget output of the saved notebook is drawn by the widget manager; with ``screenshots``, one per picture."""
    def blank():
        return [p for p in notebook.pictures() if p["ink"] is None or p["ink"] < MIN_INK]

    wait_until(lambda: not blank(), timeout, lambda: f"pictures still blank after {timeout} s: {blank()}")
    views = notebook.widget_views()
    expected = sum(WIDGET_MIME in out.get("data", {}) for cell in saved.cells for out in cell.get("outputs", []))
    assert len(views) == expected, f"{expected} widget outputs saved, {len(views)} drawn as widgets: {views}"
    bad = [v for v in views if not v["drawn"] or v["error"]]
    assert not bad, f"widget outputs not drawn: {bad}"
    pictures = notebook.pictures()
    shots.note(f"{len(pictures)} pictures and {len(views)} widgets drawn")
    if screenshots:
        for cell in sorted({p["cell"] for p in pictures}):
            for k, locator in enumerate(notebook.picture_locators(cell).all()):
                shots.element(locator, f"cell-{cell}-picture-{k}")
    return pictures


def pictures_changed_while_running(recorded):
    """{cell: how many different pictures it showed while it ran}, for the cells that showed two or more."""
    shown = {}
    for p in recorded:
        if p["running"]:
            shown.setdefault(p["cell"], set()).add(p["picture"])
    return {cell: len(pictures) for cell, pictures in shown.items() if len(pictures) >= 2}


def load_lab(page, server, timeout=60_000):
    """Load JupyterLab's page with an empty workspace."""
    page.goto(server.url("lab?reset"))
    page.locator("#jp-MainMenu").wait_for(timeout=timeout)


def close_everything(page, server):
    """Close every dialog and tab, discarding unsaved changes; reload the lab if anything stays open."""
    for _ in range(10):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() == 0:
            break
        discard = dialog.locator("button", has_text="Discard")
        if discard.count():
            discard.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(200)
    if page.locator(".jp-Dialog").count() == 0:
        page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile("^File$")).click()
        page.locator(".lm-Menu-item[data-command='application:close-all']").click()
        for _ in range(20):
            discard = page.locator(".jp-Dialog button", has_text="Discard")
            if discard.count() == 0 and page.locator(".jp-NotebookPanel").count() == 0:
                return
            if discard.count():
                discard.first.click()
            page.wait_for_timeout(200)
    load_lab(page, server)
