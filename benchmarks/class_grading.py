"""Seconds to grade a class of lesson-3 submissions: serial `nbgrader autograde`, the parallel command on every core,
and a Dask cluster of two `dask worker` processes, on the same machine in one run; and whether all three
gradebooks agree cell by cell.

The class is K copies of the bundled example submissions (grader/examples/: correct, wrong sign, missing 1/N,
autograd, an endless loop, an unreadable file, ...), cycled, so it holds the mistakes a real class makes.
"""
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

from .course_tools import Course, course
from .lesson_code import ROOT

ASSIGNMENT = "03-backprop-by-hand"
TIMEOUT_S = 30  # the endless loop's cost (the course allows 60)


def _servers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gradlab_tests_servers", ROOT / "tests" / "servers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _class(root, students, only=None):
    grader = Course(root)
    with open(grader.root / "nbgrader_config.py", "a") as config:
        config.write(f"c.Execute.timeout = {TIMEOUT_S}\n")
    grader.release(ASSIGNMENT)
    examples = sorted(p for p in (ROOT / "grader" / "examples").glob("example-*") if p.is_dir()
                      and (only is None or p.name in only))
    for i, example in zip(range(students), itertools.cycle(examples)):
        shutil.copytree(example, grader.root / "submitted" / f"s{i + 1:03d}-{example.name.removeprefix('example-')}")
    return grader


def _gradebook(root):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{Path(root) / 'gradebook.db'}") as gb:
        return {(sub.student.id, grade.name): grade.auto_score
                for sub in gb.assignment_submissions(ASSIGNMENT) for nb in sub.notebooks for grade in nb.grades}


def run(students=12, workers=None, only=None):
    """``only``: the examples to cycle through (default all); the quick mode takes the two that need no kernel time."""
    from gradlab.instructor import parallel

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="gradlab-bench-class-") as work:
        work = Path(work)
        serial = _class(work / "serial", students, only)
        start = time.perf_counter()
        serial.autograde(ASSIGNMENT)
        serial_s = time.perf_counter() - start
        print(f"  serial nbgrader autograde of {students}: {serial_s:.1f} s", flush=True)

        local = _class(work / "parallel", students, only)
        summary = parallel.grade_class(ASSIGNMENT, root=local.root, workers=workers, progress=False)
        parallel_s = summary["seconds"]
        print(f"  parallel on {workers} workers: {parallel_s:.1f} s", flush=True)

        remote = _class(work / "dask", students, only)
        with _servers().dask_cluster(workers=2) as (address, _):
            dask_summary = parallel.grade_class(ASSIGNMENT, root=remote.root, scheduler=address, progress=False)
        dask_s = dask_summary["seconds"]
        print(f"  Dask cluster of two worker processes: {dask_s:.1f} s", flush=True)

        books = [_gradebook(c.root) for c in (serial, local, remote)]
        failed = sorted(set(summary["failed"]) | set(dask_summary["failed"]))
    per_notebook = summary["task_seconds"] / max(1, len(summary["graded"]))
    return {
        "students": students, "workers": workers, "serial_s": serial_s, "parallel_s": parallel_s,
        "speedup": serial_s / parallel_s, "dask_s": dask_s, "dask_workers": 2,
        "gradebooks_equal": books[0] == books[1] == books[2] and len(books[0]) > 0,
        "gradebook_differences": sum(books[0].get(k) != b.get(k) for b in books[1:] for k in set(books[0]) | set(b)),
        "failed": failed,
        "task_s_per_notebook": per_notebook,
        "coordinator_s_per_notebook": summary["replay_seconds"] / max(1, len(summary["graded"])),
        "fixed_s": max(0.0, parallel_s - summary["task_seconds"] / workers - summary["replay_seconds"]),
    }


def projection(result, lesson_seconds, overhead_s, students=300, cores=(2, 16, 64)):
    """Projected hours for ``students`` × every lesson on each core count, from measured costs (not measured).

    Each notebook costs its plain run plus the grader's overhead per notebook on a worker; the coordinator
    then spends its measured time per notebook one after another."""
    notebooks = students * len(lesson_seconds)
    work = students * sum(s + overhead_s for s in lesson_seconds.values())
    coordinator = notebooks * result["coordinator_s_per_notebook"]
    return {str(c): (work / c + coordinator + result["fixed_s"]) / 3600 for c in cores}
