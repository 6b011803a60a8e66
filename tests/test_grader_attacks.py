"""Dishonest submissions of lesson 3, graded by a real `nbgrader autograde` with the course's configuration.

Each attack gets exactly its honest score (most start from the untouched student version, whose honest score
is 0), and an honest student graded after all of them keeps full marks. The attacks are the ones a dishonest
student tried on the course before it had a sandbox (grader/README.md, "What a submission can reach").
"""
import html
import importlib.util
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from course import LESSON3_TIMEOUT_S, ROOT, Course
from gradlab.instructor.mathjax import default_path

pytestmark = pytest.mark.slow

ASSIGNMENT, NOTEBOOK = "03-backprop-by-hand", "backprop-by-hand"
TIMEOUT_S = LESSON3_TIMEOUT_S
SECRET = "gradlab-test-secret-5d1f"
MARK = "987654"  # the detached process sleeps this long: found on the host afterwards, it escaped
HOME_SECRET = Path.home() / ".gradlab-test-secret"

_spec = importlib.util.spec_from_file_location("make_examples", ROOT / "grader" / "examples" / "make_examples.py")
examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)
TESTS = examples.TESTS


def _snoop(course, port):
    return f'''
import os, socket
def _try(what, attempt):
    try:
        found = attempt()
    except Exception as err:
        print("blocked:", what, type(err).__name__)
    else:
        if found:
            print("LEAK:", what, str(found)[:60])
_try("environment", lambda: os.environ.get("GRADLAB_TEST_SECRET"))
_try("/etc/passwd", lambda: "root:" in open("/etc/passwd").read())
_try("home", lambda: open({str(HOME_SECRET)!r}).read())
_try(".git", lambda: open({str(ROOT / ".git" / "HEAD")!r}).read())
_try("solutions", lambda: open({str(ROOT / "notebooks" / ASSIGNMENT / (NOTEBOOK + ".ipynb"))!r}).read())
_try("other students", lambda: os.listdir({str(course / "submitted")!r}))
_try("gradebook", lambda: open({str(course / "gradebook.db")!r}, "rb").read(16))
_try("write notebooks/", lambda: open({str(ROOT / "notebooks" / "planted.txt")!r}, "w").write("x"))
_try("network", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3))
'''


def _reads_solutions():
    return f'''
import glob, json, os
places, here = [], os.getcwd()
for _ in range(8):
    places.append(here)
    here = os.path.dirname(here)
places.append({str(ROOT)!r})
for place in places:
    for path in glob.glob(os.path.join(place, "notebooks", "03-*", "*.ipynb")):
        for cell in json.load(open(path))["cells"]:
            if cell["metadata"].get("nbgrader", {{}}).get("solution"):
                exec("".join(cell["source"]))
'''


REPLACES_CHECKS = '''
import torch
import gradlab.check, gradlab.grading.common as common, gradlab.grading.lesson03 as lesson03
for name in dir(lesson03):
    if name.startswith("check_"):
        setattr(lesson03, name, lambda *args, **kwargs: None)
gradlab.check.check_grad = lambda *args, **kwargs: None
common.check_tensor = common.check_grad = lambda *args, **kwargs: None
def forward(x, y, w, b): return torch.tensor(0.25), (x, y, x, x)
def dJ_dsigma(s, y): return s
def dsigma_dz(z): return torch.full_like(z, 0.25)
def dz_dw(x): return x
def dz_db(x): return x
def backward(cache): return torch.tensor(0.0), torch.tensor(0.0)
def train_by_hand(x, y, w, b, lr, passes): return 0.0, 0.0
'''


def _gradebook(course):
    return f'''
import sqlite3
for path in ("../../../gradebook.db", "../../gradebook.db", {str(course / "gradebook.db")!r}):
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET auto_score = 0")
        db.execute("DELETE FROM submitted_assignment")
        db.commit()
        print("LEAK: wrote", path)
    except Exception as err:
        print("blocked:", path, type(err).__name__)
'''


def _sabotage(course):
    victim = course / "submitted" / "zz-honest" / ASSIGNMENT
    return f'''
import os, shutil
for what, attempt in [
    ("rewrite", lambda: open({str(victim / (NOTEBOOK + ".ipynb"))!r}, "w").write("{{}}")),
    ("plant torch.py", lambda: open({str(victim / "torch.py")!r}, "w").write("raise SystemExit")),
    ("delete", lambda: shutil.rmtree({str(victim)!r})),
    ("plant here", lambda: open("torch.py", "w").write("raise SystemExit")),
]:
    try:
        attempt()
        print("done:", what)
    except Exception as err:
        print("blocked:", what, type(err).__name__)
'''


REWRITES_MODULE = '''
import gradlab.grading.lesson03 as lesson03, gradlab.grading.common as common
for path in (lesson03.__file__, common.__file__):
    try:
        open(path, "a").write("\\nraise SystemExit\\n")
        print("LEAK: rewrote", path)
    except Exception as err:
        print("blocked:", path, type(err).__name__)
'''

DETACHED = f'''
import os, subprocess
subprocess.Popen(["/bin/sh", "-c", "sleep {MARK}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{MARK}"])
    os._exit(0)
'''

TRANSFORMER = '''
def _forgive(lines):
    return ["try:\\n"] + ["    " + line for line in lines] + ["\\nexcept BaseException:\\n    pass\\n"]
get_ipython().input_transformers_cleanup.append(_forgive)
'''

EXIT = "import os\nos._exit(0)"
IGNORES_INTERRUPT = "import time\nwhile True:\n    try:\n        time.sleep(0.2)\n    except KeyboardInterrupt:\n        pass"
HOG = "import torch\nhoard = [torch.ones(2**28, dtype=torch.float64) for _ in range(64)]"
FLOOD = 'print("flood " * 20_000_000)'
WRITES_FILES = f'''
for path in ("planted.html", {str(ROOT / "notebooks" / ASSIGNMENT / "planted.html")!r}):
    try:
        open(path, "w").write("<script>alert(1)</script>")
    except Exception as err:
        print("blocked:", path, type(err).__name__)
'''
QUOTING_DZ_DW = '''
raise ValueError("the test that called me: " + get_ipython().history_manager.input_hist_raw[-1])
'''
PRINTS_HISTORY = "print('\\n'.join(In))"
WARNING_DZ_DB = '''
import warnings
warnings.warn("this warning goes to stderr, and must not cost the cell")
return torch.ones_like(x)
'''


def _noisy(nb):
    for code in (WRITES_FILES, FLOOD, HOG):
        _after(nb, "test_forward", code)
    return nb


# Every exercise publishes, from a thread, a record of its check made with the grader's own references (autograd,
# the guard suspended), before the check's own record; then returns nothing.
FORGES_RECORDS = '''
import json, threading
from IPython.display import publish_display_data
from gradlab.grading import common, lesson03, trial

def _forge(name):
    reference = {"forward": lesson03.reference_forward, "train_by_hand": lesson03.reference_training}.get(
        name) or getattr(lesson03, "reference_" + name)
    box = []
    def work():
        box.append(trial.record_here(getattr(lesson03, "check_" + name), common._unguarded(reference)))
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    if box:
        publish_display_data({trial.MIME: json.dumps(box[0], allow_nan=True), "text/plain": "(record)"})
'''
FORGED = ("forward", "dJ_dsigma", "dsigma_dz", "dz_dw", "dz_db", "backward", "train_by_hand")

# backward by autograd in a thread of its own (torch's guard nets are per thread).
AUTOGRAD_IN_A_THREAD = """x, y, z, s = cache
import threading
box = []
def work():
    w0 = torch.zeros((), dtype=z.dtype, requires_grad=True)
    b0 = torch.zeros((), dtype=z.dtype, requires_grad=True)
    box.append(torch.autograd.grad(((torch.sigmoid(z + w0 * x + b0) - y) ** 2).mean(), (w0, b0)))
worker = threading.Thread(target=work)
worker.start()
worker.join()
return box[0] if box else (torch.zeros(()), torch.zeros(()))"""

# Records from a cell that is no test: each is read by the grader, which kept every one in memory.
RECORD_FLOOD = '''
from IPython.display import publish_display_data
record = '{"version": 1, "check": "lesson03.check_forward", "events": [], "pad": "' + "A" * 1_000_000 + '"}'
for _ in range(40):
    publish_display_data({"application/vnd." + "gradlab.record+json": record})
'''


# HTML and script where the instructor's formgrader renders them: an output, and a markdown cell of its own.
SCRIPT_IN_OUTPUTS = '''
from IPython.display import HTML, Javascript, display
display(HTML('<img src=x onerror="document.title=\\'XSS-HTML\\'"><script>window.XSS_SCRIPT = 1</script>'))
display(Javascript("window.XSS_JS = 1"))
'''
SCRIPT_IN_MARKDOWN = '<img src=x onerror="window.XSS_MD = 1"> <script>window.XSS_MD_SCRIPT = 1</script> my notes'


def _with_scripts(nb):
    nb.cells.insert(1, new_code_cell(SCRIPT_IN_OUTPUTS))
    nb.cells.insert(1, new_markdown_cell(SCRIPT_IN_MARKDOWN))
    return nb


def _at_top(nb, code):
    nb.cells.insert(1, new_code_cell(code))
    return nb


def _after(nb, grade_id, code):
    cell = examples._cell(nb, grade_id)
    nb.cells.insert(nb.cells.index(cell) + 1, new_code_cell(code))
    return nb


def students(course, port):
    """{student: (how the notebook is made from (student version, source), {test cell: expected score})};
    a test cell missing from the expectations may score either way (it depends on another cell)."""
    blank = {t: 0 for t in TESTS}
    full = None  # every test cell's full points, filled in by the test from the gradebook

    def blank_with(code):
        return lambda student, source: _at_top(examples._blank(student, source), code)

    solved = examples._solved
    return {
        "a-reads-solutions": (blank_with(_reads_solutions()), blank),
        "b-replaces-checks": (blank_with(REPLACES_CHECKS), blank),
        "c-autograd": (lambda st, so: solved(st, so, dz_db="import torch\nb = torch.zeros((), requires_grad=True)\n"
                                           "return torch.autograd.grad((x * 0 + b).sum(), b)[0] * torch.ones_like(x)"),
                       {"test_dz_db": 0, "test_forward": full, "test_dJ_dsigma": full, "test_dsigma_dz": full,
                        "test_dz_dw": full}),
        "d-gradebook": (blank_with(_gradebook(course)), blank),
        "aa-sabotage": (blank_with(_sabotage(course)), blank),
        "f-rewrites-module": (blank_with(REWRITES_MODULE), blank),
        "g-snoops": (blank_with(_snoop(course, port)), blank),
        "h-detached": (blank_with(DETACHED), blank),
        "i-transformer": (blank_with(TRANSFORMER), blank),
        "j-exits": (lambda st, so: _after(solved(st, so), "test_dz_db", EXIT),
                    {**{t: full for t in TESTS[:5]}, "test_backward": 0, "test_train_by_hand": 0}),
        "k-ignores-interrupt": (lambda st, so: _after(solved(st, so), "test_dz_db", IGNORES_INTERRUPT),
                                {**{t: full for t in TESTS[:5]}, "test_backward": 0, "test_train_by_hand": 0}),
        # A memory hog, a flood of output, files written: honest otherwise, so full marks.
        "l-noisy": (lambda st, so: _noisy(solved(st, so)), {t: full for t in TESTS}),
        # dz_dw quotes its caller (the test cell) in an exception; dz_db is right but warns on stderr.
        "o-quotes-hidden": (lambda st, so: _after(solved(st, so, dz_dw=QUOTING_DZ_DW, dz_db=WARNING_DZ_DB),
                                                  "test_dz_db", PRINTS_HISTORY),
                            {"test_dz_dw": 0, "test_forward": full, "test_dz_db": full}),
        "p-forges-records": (lambda st, so: _at_top(solved(st, so, **{n: f"return _forge({n!r})" for n in FORGED}),
                                                    FORGES_RECORDS), blank),
        "q-autograd-in-a-thread": (lambda st, so: solved(st, so, backward=AUTOGRAD_IN_A_THREAD),
                                   {**{t: full for t in TESTS[:5]}, "test_backward": 0}),
        "r-record-flood": (blank_with(RECORD_FLOOD), blank),
        "s-scripts-for-the-instructor": (lambda st, so: _with_scripts(examples._blank(st, so)), blank),
        "zz-honest": (lambda st, so: solved(st, so), {t: full for t in TESTS}),
    }


class _Listener:
    """A TCP server on 127.0.0.1 that counts the connections it receives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port, self.accepted, self.running = self.sock.getsockname()[1], 0, True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    listener = _Listener()
    course = Course(tmp_path_factory.mktemp("attacks"))
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.Execute.timeout = {TIMEOUT_S}\n")
    course.release(ASSIGNMENT)
    source = nbformat.read(ROOT / "notebooks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    student = nbformat.read(course.release_dir(ASSIGNMENT) / f"{NOTEBOOK}.ipynb", as_version=4)
    plan = students(course.root, listener.port)
    for name, (make, _) in plan.items():
        folder = course.root / "submitted" / name / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(make(student, source), folder / f"{NOTEBOOK}.ipynb")
    planted = ROOT / "notebooks" / "planted.txt"
    os.environ["GRADLAB_TEST_SECRET"] = SECRET
    HOME_SECRET.write_text(SECRET)
    try:
        run = course.autograde(ASSIGNMENT)  # raises if the run does not exit 0
        course.nbgrader("generate_feedback", ASSIGNMENT, "--force")
    finally:
        os.environ.pop("GRADLAB_TEST_SECRET", None)
        HOME_SECRET.unlink(missing_ok=True)
        listener.close()
    yield course, plan, run.stdout + run.stderr, listener
    for leftover in (planted, ROOT / "notebooks" / ASSIGNMENT / "planted.html"):
        leftover.unlink(missing_ok=True)


def _autograded(course, student):
    return nbformat.read(course.root / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)


def _printed(nb):
    return "".join(str(o.get("text", "")) + str(o.get("evalue", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def _feedback(course, student):
    page = course.root / "feedback" / student / ASSIGNMENT / f"{NOTEBOOK}.html"
    return page, html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))


@pytest.mark.parametrize("student", list(students(Path("/x"), 0)))
def test_each_attack_gets_exactly_its_honest_score(graded, student):
    course, plan, _, _ = graded
    cells = course.cell_scores(student, ASSIGNMENT, NOTEBOOK)
    for cell, expected in plan[student][1].items():
        score, max_score = cells[cell]
        assert score == (max_score if expected is None else expected), f"{student}: {cell} scored {score}"


def test_nothing_outside_the_sandbox_is_reached(graded):
    course, _, _, listener = graded
    for student in ("g-snoops", "d-gradebook", "f-rewrites-module"):
        printed = _printed(_autograded(course, student))
        assert "LEAK" not in printed, printed
        assert "blocked" in printed
    assert SECRET not in _printed(_autograded(course, "g-snoops"))
    assert listener.accepted == 0, "a kernel connected to a server on the grader's 127.0.0.1"
    assert not (ROOT / "notebooks" / "planted.txt").exists()
    assert not (ROOT / "notebooks" / ASSIGNMENT / "planted.html").exists()
    for module in ("lesson03.py", "common.py"):
        assert not (ROOT / "gradlab" / "grading" / module).read_text().rstrip().endswith("raise SystemExit")


def test_other_students_and_the_gradebook_are_untouched(graded):
    course, _, _, _ = graded
    honest = course.root / "submitted" / "zz-honest" / ASSIGNMENT
    assert sorted(p.name for p in honest.iterdir()) == [f"{NOTEBOOK}.ipynb"]
    assert nbformat.read(honest / f"{NOTEBOOK}.ipynb", as_version=4).cells
    scores = course.scores(ASSIGNMENT)
    assert scores["zz-honest"][0] == scores["zz-honest"][1] > 0
    assert len(scores) == len(students(Path("/x"), 0)), "every submission is in the gradebook"


def test_no_process_outlives_its_kernel(graded):
    leftovers = subprocess.run(["pgrep", "-f", f"sleep {MARK}"], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes started by a submission still run: {leftovers}"


@pytest.mark.parametrize("student, sentence", [
    ("j-exits", "the kernel stopped"),
    ("k-ignores-interrupt", "did not stop when interrupted"),
])
def test_a_stopped_kernel_is_explained_and_costs_only_the_cells_after(graded, student, sentence):
    course, _, _, _ = graded
    _, text = _feedback(course, student)
    assert sentence in text
    assert "this cell did not run" in text


def test_output_is_capped(graded):
    course, _, _, _ = graded
    flood = course.root / "autograded" / "l-noisy" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    page, _ = _feedback(course, "l-noisy")
    mathjax = mathjax_file.stat().st_size if (mathjax_file := default_path()).exists() else 0  # inlined in each page
    assert flood.stat().st_size < 2_000_000 and page.stat().st_size - mathjax < 1_000_000
    assert "the grader cut this cell's output" in _printed(_autograded(course, "l-noisy"))


def test_feedback_carries_no_planted_file_and_no_hidden_test_code(graded):
    course, _, _, _ = graded
    for student in ("l-noisy", "aa-sabotage"):
        folder = course.root / "feedback" / student / ASSIGNMENT
        assert sorted(p.name for p in folder.iterdir()) == [f"{NOTEBOOK}.html"]
    _, text = _feedback(course, "o-quotes-hidden")
    assert "the test that called me" in text, "the student's own message still reaches them"
    for cell in TESTS:
        assert f"lesson03.check_{cell.removeprefix('test_')}(" not in text


def test_a_warning_on_stderr_costs_nothing(graded):
    course, _, _, _ = graded
    text = _printed(_autograded(course, "o-quotes-hidden"))
    assert "must not cost the cell" in text
    assert course.cell_scores("o-quotes-hidden", ASSIGNMENT, NOTEBOOK)["test_dz_db"][0] > 0


def test_forged_records_and_autograd_in_a_thread_are_named(graded):
    course = graded[0]
    for cell in _autograded(course, "p-forges-records").cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in TESTS:
            verdict = str(cell.outputs[-1].get("evalue", ""))
            # the real record came too, or the forging thread ran under the check's guard
            assert "published records of its own" in verdict or "used autograd" in verdict, verdict
    threaded = _printed(_autograded(course, "q-autograd-in-a-thread"))
    assert "`backward` used autograd" in threaded and "requires_grad=True" in threaded, threaded


def test_the_formgrader_shows_no_script_of_a_student(graded):
    """nbgrader's formgrader renders autograded notebooks with nbconvert's HTMLExporter and the course's config."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader import handlers
    from traitlets.config.loader import PyFileConfigLoader

    course = graded[0]
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course.root)).load_config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    path = course.root / "autograded" / "s-scripts-for-the-instructor" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    page, _ = HTMLExporter(config=config).from_filename(str(path), resources={
        "index": 0, "total": 1, "notebook_id": NOTEBOOK, "submission_id": "x", "base_url": "/", "mathjax_url": "",
        "last_name": "", "first_name": "", "notebook_path": str(path), "nbgrader": {"base_url": "/"}})
    feedback, _ = _feedback(course, "s-scripts-for-the-instructor")
    for html_page in (page, feedback.read_text()):
        assert "my notes" in html_page, "the student's markdown is shown"
        assert not re.search(r"<img[^>]*onerror", html_page), "an image's onerror handler"
        assert not re.search(r"<script[^>]*>[^<]*XSS", html_page), "a script"
