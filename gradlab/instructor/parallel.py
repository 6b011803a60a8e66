"""Grade every submission of an assignment in parallel, on this machine's cores or on a Dask cluster.

    cd grader && ../.venv/bin/python -m gradlab.instructor.parallel 03-backprop-by-hand [--workers 8]
    ... --scheduler tcp://host:8786      (a cluster started with `dask scheduler` / `dask worker`)

nbgrader grades one notebook after another (nbgrader #174). Here the slow part, running each notebook, is
spread over Dask workers, and everything else stays nbgrader's own:

1. This process makes a *snapshot*: the assignment alone, released from its source into a fresh SQLite
   gradebook (no student data leaves the instructor's machine).
2. Each task carries one student's submitted files and the snapshot. A worker runs nbgrader's own
   Autograde on it in a private temporary course, with the course's configuration: sandboxed kernel, trusted
   verdicts (gradlab.instructor.execute). It returns the executed notebooks and gradlab's records. Workers
   need no shared file system and never see the gradebook; a task whose worker dies is run again elsewhere.
3. As results arrive, this process runs nbgrader's Autograde for that student once more, with ``Replay`` in
   place of the execution: the same sanitising, the outputs the worker computed (checked to belong to the
   very same cells), then nbgrader's own grade saving. So the gradebook, autograded/ and records/ are written
   here only, exactly as a serial ``nbgrader autograde`` writes them.
"""
import argparse
import asyncio
import contextlib
import importlib
import io
import itertools
from copy import deepcopy
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nbformat
from nbgrader.apps.api import NbGraderAPI
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import capture_log
from sqlalchemy.exc import SAWarning
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from . import records, repair

EXECUTE = "gradlab.instructor.execute.TrustedExecute"
STASH = "gradlab.instructor.parallel.Stash"
REPLAY = "gradlab.instructor.parallel.Replay"
_RESULTS = {}  # (student, assignment, notebook) -> (executed notebook, record), filled as workers finish
_EXECUTED = {}  # in a worker: (student, assignment, notebook) -> the notebook as TrustedExecute left it


# ------------------------------------------------------------------------------------------- configuration
def _alembic_on_path():
    """nbgrader runs `alembic` from PATH when it opens a gradebook: the one beside this Python."""
    here = str(Path(sys.executable).parent)
    if shutil.which("alembic") is None and here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")


def course_config(root="."):
    """The course's nbgrader configuration, as `nbgrader` itself would load it in ``root``."""
    root = Path(root).resolve()
    config = Config()
    if (root / "nbgrader_config.py").exists():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config())
    config.CourseDirectory.root = str(Path(config.CourseDirectory.get("root", root)).resolve())
    return config


def _with_pipeline(config, executors, rest=True):
    """The course's config with its TrustedExecute replaced by ``executors`` in the autograde pipeline, and the
    preprocessors after it kept only if ``rest``."""
    pipeline = list(config.Autograde.autograde_preprocessors)
    if EXECUTE not in pipeline:
        raise SystemExit(f"the course's autograde pipeline has no {EXECUTE}: parallel grading needs it")
    at = pipeline.index(EXECUTE)
    copy = deepcopy(config)
    copy.Autograde.autograde_preprocessors = pipeline[:at] + list(executors) + (pipeline[at + 1:] if rest else [])
    return copy


# ------------------------------------------------------------------------------------------- the snapshot
def snapshot(config, assignment):
    """{"gradebook": bytes, "source": {relative path: bytes}}: the assignment released into a fresh gradebook."""
    coursedir = CourseDirectory(config=config)
    source = Path(coursedir.format_path(coursedir.source_directory, ".", assignment))
    files = {str(p.relative_to(source)): p.read_bytes() for p in source.rglob("*")
             if p.is_file() and ".ipynb_checkpoints" not in p.parts}
    with tempfile.TemporaryDirectory(prefix="gradlab-snapshot-") as work:
        course = _temp_course(Path(work), config, assignment, files)
        api = NbGraderAPI(coursedir=CourseDirectory(config=course), config=course)
        result = api.generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"releasing {assignment} for the workers failed:\n{result.get('error', '')}")
        return {"gradebook": (Path(work) / "gradebook.db").read_bytes(), "source": files}


def _temp_course(work, config, assignment, source_files):
    course = deepcopy(config)
    course.CourseDirectory.root = str(work)
    course.CourseDirectory.source_directory = "source"
    course.CourseDirectory.db_url = f"sqlite:///{work / 'gradebook.db'}"
    for rel, data in source_files.items():
        target = work / "source" / assignment / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return course


# ------------------------------------------------------------------------------------------- one task
async def warm_up():
    """Run on each worker as a class starts: the imports every task needs, in a thread, so that the worker goes on
    talking to the scheduler meanwhile."""
    for module in ("torch", "gradlab.instructor.execute"):
        await asyncio.to_thread(importlib.import_module, module)


@contextlib.contextmanager
def _quiet_gradebook():
    """nbgrader's gradebook code trips a harmless SQLAlchemy warning on every new submission: three lines per
    student that would bury the progress bar and the summary."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object of type <Submitted", category=SAWarning)
        yield


def grade_one(task):
    """Run on a worker: autograde one student's submission in a private course; return notebooks and records."""
    import torch

    torch.set_num_threads(1)
    _alembic_on_path()
    started = time.perf_counter()
    assignment, student = task["assignment"], task["student"]
    with tempfile.TemporaryDirectory(prefix="gradlab-task-") as work:
        work = Path(work)
        course = _temp_course(work, task["config"], assignment, task["snapshot"]["source"])
        course.Sandbox.torch_threads = 1  # a busy machine: one torch thread per kernel (FIELD-NOTES)
        (work / "gradebook.db").write_bytes(task["snapshot"]["gradebook"])
        submitted = work / "submitted" / student / assignment
        for rel, data in task["files"].items():
            target = submitted / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        coursedir = CourseDirectory(config=course)
        coursedir.assignment_id, coursedir.student_id = assignment, student
        app = Autograde(coursedir=coursedir, config=course)
        app.force = True
        with _quiet_gradebook():
            outcome = capture_log(app)
        notebooks = {name: nbformat.writes(nb) for (who, what, name), nb in list(_EXECUTED.items())
                     if who == student and what == assignment} if outcome["success"] else {}
        for key in [k for k in _EXECUTED if k[0] == student and k[1] == assignment]:
            del _EXECUTED[key]
        kept = records.load_all(work, assignment).get(student, {})
    return {"assignment": assignment, "student": student, "success": outcome["success"], "notebooks": notebooks,
            "records": kept, "log": outcome.get("log", "")[-20_000:], "error": outcome.get("error", "")[-5_000:],
            "seconds": time.perf_counter() - started}


def submitted_files(root, student, assignment):
    """A submission's files, read here with the grader's rights: links out of it are removed first, as plain
    autograde does (repair.clean_links), so that no file of this machine travels to a worker as the student's."""
    folder = Path(root) / "submitted" / student / assignment
    repair.clean_links(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------- replay here
class Stash(NbGraderPreprocessor):
    """In a worker, right after TrustedExecute: keep the executed notebook as the coordinator will need it."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        _EXECUTED[(info["student"], info["assignment"], info["notebook"])] = deepcopy(nb)
        return nb, resources


class Replay(NbGraderPreprocessor):
    """In place of TrustedExecute in this process: the outputs a worker computed for the very same cells."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        key = (info["student"], info["assignment"], info["notebook"])
        executed = _RESULTS.get(key)
        if executed is None:
            raise RuntimeError(f"no result from a worker for {'/'.join(key)}")
        notebook, record = executed
        if [(c.cell_type, c.source) for c in notebook.cells] != [(c.cell_type, c.source) for c in nb.cells]:
            raise RuntimeError(f"{'/'.join(key)}: the worker graded other cells than these (was the assignment "
                               "released again since?): grade it with plain `nbgrader autograde`")
        for mine, theirs in zip(nb.cells, notebook.cells):
            if mine.cell_type == "code":
                mine.outputs = theirs.outputs
                mine.execution_count = theirs.get("execution_count")
        if "language_info" in notebook.metadata:
            nb.metadata["language_info"] = notebook.metadata["language_info"]
        if record is not None:
            records.save(CourseDirectory(config=self.config).root, info, {k: v for k, v in record.items()
                                                                           if k not in ("assignment", "student", "notebook")})
        return nb, resources


def _replay(config, assignment, result):
    for name, text in result["notebooks"].items():
        _RESULTS[(result["student"], assignment, name)] = (nbformat.reads(text, as_version=4),
                                                            result["records"].get(name))
    try:
        coursedir = CourseDirectory(config=config)
        api = NbGraderAPI(coursedir=coursedir, config=config)
        with _quiet_gradebook():
            return api.autograde(assignment, result["student"], force=True, create=True)
    finally:
        for name in result["notebooks"]:
            _RESULTS.pop((result["student"], assignment, name), None)


# ------------------------------------------------------------------------------------------- the class
def students_to_grade(root, assignment, force=False, only=None):
    submitted = sorted(p.parent.name for p in Path(root).glob(f"submitted/*/{assignment}") if p.is_dir())
    if only:
        submitted = [s for s in submitted if s in set(only)]
    if force:
        return submitted
    return [s for s in submitted if not (Path(root) / "autograded" / s / assignment).exists()]


def grade_class(assignment, root=".", workers=None, scheduler=None, force=False, only=None, progress=True,
                retries=2):
    """Grade every (not yet graded) submission; returns {"graded": [...], "failed": {student: why}, "seconds": s}."""
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    started = time.perf_counter()
    _alembic_on_path()
    config = course_config(root)
    course_root = config.CourseDirectory.root
    todo = students_to_grade(course_root, assignment, force, only)
    summary = {"graded": [], "failed": {}, "skipped": [], "seconds": 0.0, "task_seconds": 0.0, "replay_seconds": 0.0}
    if not todo:
        summary["skipped"] = students_to_grade(course_root, assignment, True, only)
        return summary
    # A worker stops at the executed notebook: what follows (grades saved, late penalties) runs once, in the replay.
    worker_config = _with_pipeline(config, [EXECUTE, STASH], rest=False)
    replay_config = _with_pipeline(config, [REPLAY])
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # With the dashboard off the scheduler still serves its HTTP routes (health, metrics): on a free port of
        # 127.0.0.1, not on 8787, which a second class graded at the same time would find taken.
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1",
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        client = Client(cluster)
    try:
        # The workers import what every task needs (seconds) while this process releases the assignment. Not as
        # tasks: a task would hold a worker that the scheduler may need for a retry.
        client.run(warm_up, wait=False)
        shot = snapshot(config, assignment)
        shared = client.scatter(shot, broadcast=True)
        waiting = iter(todo)

        def submit(how_many):
            for s in itertools.islice(waiting, max(0, how_many)):
                yield client.submit(grade_one, {"assignment": assignment, "student": s, "config": worker_config,
                                                "snapshot": shared, "files": submitted_files(course_root, s, assignment)},
                                    key=f"grade-{assignment}-{s}", retries=retries, pure=False)

        # Only as many tasks as the workers have threads are out at a time; the next one goes out as one comes back,
        # to whichever worker is free. Handed out all at once, tasks queue on the workers, and one that waits behind
        # an endless loop (a minute, up to the timeout) keeps a class from finishing while other workers sit idle.
        running = as_completed(submit(_threads(client)))
        bar = tqdm(total=len(todo), desc=f"grading {assignment}", unit="notebook", disable=not progress,
                   file=sys.stderr)
        for future in running:
            running.update(submit(_threads(client) - running.count()))
            student = future.key.removeprefix(f"grade-{assignment}-")
            try:
                result = future.result()
            except Exception as err:  # the task failed on every worker it was given to
                summary["failed"][student] = f"{type(err).__name__}: {err}"
            else:
                _record(summary, student, result, replay_config, assignment)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    summary["seconds"] = time.perf_counter() - started
    return summary


def _threads(client):
    """Tasks the cluster runs at once now (at least one: a scheduler whose workers have not joined yet)."""
    return max(1, sum(client.nthreads().values()))


def _record(summary, student, result, config, assignment):
    summary["task_seconds"] += result["seconds"]
    if not result["success"]:
        summary["failed"][student] = _last_error(result)
        return
    started = time.perf_counter()
    outcome = _replay(config, assignment, result)
    summary["replay_seconds"] += time.perf_counter() - started
    if outcome["success"]:
        summary["graded"].append(student)
    else:
        summary["failed"][student] = _last_error(outcome)


def _last_error(result):
    """The line of nbgrader's log that says what went wrong (its final exception only says 'see above')."""
    lines = [l for l in (result.get("log") or "").splitlines() if l.startswith("[ERROR]") and "see the" not in l]
    text = lines or (result.get("error") or "unknown error").strip().splitlines()
    return text[-1][:300] if text else "unknown error"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: every core)")
    parser.add_argument("--scheduler", help="address of a Dask scheduler (default: a local cluster of its own)")
    parser.add_argument("--force", action="store_true", help="grade again the students already graded")
    parser.add_argument("--student", action="append", help="only this student (repeat for several)")
    args = parser.parse_args(argv)
    summary = grade_class(args.assignment, workers=args.workers, scheduler=args.scheduler, force=args.force,
                          only=args.student)
    print(report(args.assignment, summary))
    return 1 if summary["failed"] else 0


def report(assignment, summary):
    out = io.StringIO()
    print(f"{assignment}: {len(summary['graded'])} graded, {len(summary['failed'])} failed, "
          f"{len(summary['skipped'])} already graded (--force grades them again), in {summary['seconds']:.1f} s",
          file=out)
    for student, why in sorted(summary["failed"].items()):
        print(f"  failed: {student}: {why}", file=out)
    return out.getvalue().rstrip()


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: workers and nbgrader's preprocessors name
    # gradlab.instructor.parallel, and its registries must be the ones filled here.
    from gradlab.instructor import parallel

    sys.exit(parallel.main())
