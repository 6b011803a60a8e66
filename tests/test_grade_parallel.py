"""Grading a class in parallel gives what a serial `nbgrader autograde` gives (into SQLite): on a local cluster
into a PostgreSQL gradebook, and on a Dask cluster of separate worker processes (one of which dies) into SQLite."""
import contextlib
import os
import shutil
import threading
import time

import nbformat
import pytest

from course import ROOT, Course
from gradlab.instructor import parallel, records
from gradlab.instructor.sandbox import THREAD_ENV
from servers import dask_cluster, postgres

pytestmark = pytest.mark.slow

ASSIGNMENT, NOTEBOOK = "03-backprop-by-hand", "backprop-by-hand"
STUDENTS = ("example-correct", "example-wrong-sign", "example-blank", "example-invalid-json")
THREADS_CELL = "import torch\nprint('torch threads:', torch.get_num_threads())"


def _course(root, *config_lines):
    course = Course(root)
    with open(course.root / "nbgrader_config.py", "a") as config:
        config.write("".join(line + "\n" for line in config_lines))
    course.release(ASSIGNMENT)
    for student in STUDENTS:
        shutil.copytree(ROOT / "grader" / "examples" / student, course.root / "submitted" / student)
    correct = course.root / "submitted" / "example-correct" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(correct, as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(THREADS_CELL))
    nbformat.write(nb, correct)
    return course


def _gradebook(db_url):
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return {(sub.student.id, grade.name): (grade.auto_score, grade.needs_manual_grade)
                for sub in gb.assignment_submissions(ASSIGNMENT) for nb in sub.notebooks for grade in nb.grades}


def _test_outputs(course, student):
    path = course.root / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(path, as_version=4)
    return [(c.source, c.get("outputs")) for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]


def _verdicts(course):
    return {student: [(v["cell"], v["ok"], v["message"], v["kind"]) for v in nbs[NOTEBOOK]["verdicts"]]
            for student, nbs in records.load_all(course.root, ASSIGNMENT).items()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    course = _course(tmp_path_factory.mktemp("serial"))
    # The grader's own thread setting reaches the sandboxed kernel (torch's default is one thread per core).
    with _thread_env("1"):
        course.autograde(ASSIGNMENT)
    assert "torch threads: 1" in _threads_printed(course)
    return course


@contextlib.contextmanager
def _thread_env(threads):
    """Both thread variables (torch takes MKL_NUM_THREADS over OMP_NUM_THREADS) for what starts meanwhile."""
    with pytest.MonkeyPatch.context() as env:
        for name in THREAD_ENV:
            env.setenv(name, threads)
        yield


def _threads_printed(course):
    nb = nbformat.read(course.root / "autograded" / "example-correct" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" and c.source == THREADS_CELL
                   for o in c.outputs)


def _same_as_serial(serial, course, db_url):
    assert _gradebook(db_url) == _gradebook(f"sqlite:///{serial.root / 'gradebook.db'}")
    for student in STUDENTS:
        assert _test_outputs(course, student) == _test_outputs(serial, student), student
    assert _verdicts(course) == _verdicts(serial)


def test_a_local_cluster_grades_into_postgresql_like_serial_autograde_and_resumes(serial, tmp_path):
    """The local cluster (every core) with a PostgreSQL gradebook; the Dask test below grades into SQLite."""
    # Parallel grading's one torch thread per kernel wins over the grader's own setting.
    with postgres() as url, _thread_env(str(os.cpu_count())):
        course = _course(tmp_path, f"c.CourseDirectory.db_url = {url!r}")
        summary = parallel.grade_class(ASSIGNMENT, root=course.root, workers=2, progress=False)
        assert sorted(summary["graded"]) == sorted(STUDENTS) and not summary["failed"]
        _same_as_serial(serial, course, url)
        assert not (course.root / "gradebook.db").exists(), "nothing went into a SQLite gradebook beside it"
        assert "torch threads: 1" in _threads_printed(course), "each worker's kernel runs torch on one thread"

        again = parallel.grade_class(ASSIGNMENT, root=course.root, workers=2, progress=False)
        assert again["graded"] == [] and sorted(again["skipped"]) == sorted(STUDENTS), "graded students are skipped"
        forced = parallel.grade_class(ASSIGNMENT, root=course.root, workers=2, progress=False, force=True,
                                      only=["example-blank"])
        assert forced["graded"] == ["example-blank"]
        _same_as_serial(serial, course, url)


def test_a_dask_cluster_of_worker_processes_survives_a_dead_worker(serial, tmp_path):
    course = _course(tmp_path)
    with dask_cluster(workers=2) as (address, workers):
        killed = threading.Event()
        killer = threading.Thread(target=_kill_a_busy_worker, args=(address, workers[0], killed), daemon=True)
        done, most = threading.Event(), []
        counter = threading.Thread(target=_most_tasks_out, args=(address, done, most), daemon=True)
        killer.start()
        counter.start()
        summary = parallel.grade_class(ASSIGNMENT, root=course.root, scheduler=address, progress=False)
        done.set()
        killer.join()
        counter.join()
        assert killed.is_set() and workers[0].poll() is not None, "the first worker was killed while it graded"
        assert workers[1].poll() is None
    # Two workers of one thread: never more than two students out at once, the rest wait here, not on a worker.
    assert most == [2], f"at most {most} grading tasks out at a time"
    assert sorted(summary["graded"]) == sorted(STUDENTS) and not summary["failed"]
    _same_as_serial(serial, course, f"sqlite:///{course.root / 'gradebook.db'}")


def _most_tasks_out(address, done, most):
    """The largest number of grading tasks the scheduler held at once (waiting or running), until ``done``."""
    from dask.distributed import Client

    def _grading_tasks(dask_scheduler):  # nested: sent by value, the scheduler cannot import this test module
        return sum(1 for key, task in dask_scheduler.tasks.items()
                   if str(key).startswith("grade-") and task.state in ("waiting", "queued", "no-worker", "processing"))

    with Client(address) as client:
        seen = 0
        while not done.is_set():
            seen = max(seen, client.run_on_scheduler(_grading_tasks))
            time.sleep(0.1)
        most.append(seen)


def _kill_a_busy_worker(address, process, killed, seconds=120):
    """Kill the worker process once it is grading something: its task must be run again elsewhere."""
    from dask.distributed import Client

    with Client(address) as client:
        # The scheduler's worker list does not carry pids: ask each worker for its own.
        address_of = {pid: worker for worker, pid in client.run(os.getpid).items()}
        target = address_of[process.pid]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if client.processing().get(target):
                time.sleep(2)  # well inside the notebook's run
                process.kill()
                process.wait(timeout=30)
                killed.set()
                return
            time.sleep(0.2)


def test_no_file_of_this_machine_travels_to_a_worker_as_the_students(tmp_path):
    """The coordinator reads submissions with the grader's rights: a link out of one is removed before reading,
    and a notebook that was such a link travels as the text plain autograde grades as unreadable."""
    from gradlab.instructor.repair import LINK_MARKER

    secret = tmp_path / "graders-secret.txt"
    secret.write_text("the grader's own file")
    folder = tmp_path / "submitted" / "mallory" / "03-backprop-by-hand"
    (folder / "data").mkdir(parents=True)
    (folder / "backprop-by-hand.ipynb").symlink_to(secret)
    (folder / "notes.txt").symlink_to(secret)
    (folder / "data" / "own.txt").write_text("the student's own file")
    (folder / "inside.txt").symlink_to(folder / "data" / "own.txt")
    files = parallel.submitted_files(tmp_path, "mallory", "03-backprop-by-hand")
    assert not any(b"grader's own" in content for content in files.values()), files
    assert files["backprop-by-hand.ipynb"].decode().startswith(LINK_MARKER)
    assert files["data/own.txt"] == files["inside.txt"] == b"the student's own file"
    assert "notes.txt" not in files and secret.read_text() == "the grader's own file"
