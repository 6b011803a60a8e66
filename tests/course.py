"""Run nbgrader and nbclient on the lessons in throw-away course folders, never in grader/ itself."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
GRADER_CONFIG = ROOT / "grader" / "nbgrader_config.py"
# Execute.timeout of the tests that autograde lesson 3's examples and attacks (an endless loop costs this much):
# lesson 3's slowest cell (its imports) takes 1.6 s on an idle 2-core machine; the course itself allows 60.
LESSON3_TIMEOUT_S = 15


def lessons():
    """Every lesson as (assignment, notebook file name), found on disk: a new lesson needs no test change."""
    return [(p.parent.name, p.name) for p in sorted(NOTEBOOKS.glob("[0-9]*/*.ipynb"))]


def solution_namespace(notebook):
    """A lesson's imports and solution cells (``notebook`` relative to notebooks/), run in order in one
    namespace: the grading tests use the very code students are graded against."""
    import torch

    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    namespace = {"torch": torch}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.metadata.get("nbgrader", {}).get("solution"):
            exec(cell.source, namespace)
        elif not is_graded_test(cell):
            exec(compile(_imports_of(cell.source), "<imports>", "exec"), namespace)
    return namespace


def _imports_of(source):
    """The top-level import statements of a lesson cell: the names its solutions use."""
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:
        body = []
    return ast.Module(body=[n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])


def execute(path, allow_errors=False, timeout=300):
    """Execute a notebook in its own folder with the project's kernel and return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    client.execute()
    return nb


def errors(nb):
    """[(cell index, cell, error output)] for every cell that raised."""
    return [
        (i, cell, out)
        for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.output_type == "error"
    ]


def is_graded_test(cell):
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution") and cell.cell_type == "code"


class Course:
    """A temporary nbgrader course whose config is the real one, with its source folder at notebooks/."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "nbgrader_config.py").write_text(
            f"c = get_config()\n"
            f"load_subconfig({str(GRADER_CONFIG)!r})\n"
            f"c.CourseDirectory.root = {str(self.root)!r}\n"
            f"c.CourseDirectory.source_directory = {str(NOTEBOOKS)!r}\n"
        )

    def nbgrader(self, *args):
        # nbgrader runs `alembic` from PATH when it creates a gradebook: put the venv's bin first.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        result = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args], cwd=self.root, env=env, capture_output=True, text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise AssertionError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def release(self, assignment):
        self.nbgrader("generate_assignment", assignment, "--force")
        return self.release_dir(assignment)

    def release_dir(self, assignment):
        return self.root / "release" / assignment

    def submit(self, student, assignment, notebook_path):
        folder = self.root / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(notebook_path, folder / Path(notebook_path).name)
        (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")
        return folder

    def autograde(self, assignment, *extra):
        return self.nbgrader("autograde", assignment, "--force", *extra)

    def scores(self, assignment):
        """{student: (score, max_score)} from the gradebook."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            return {
                s.student.id: (s.score, s.max_score)
                for s in gb.assignment_submissions(assignment)
            }

    def cell_scores(self, student, assignment, notebook):
        """{grade_id: (score, max_score)} of one student's notebook."""
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            nb = gb.find_submission_notebook(notebook, assignment, student)
            return {g.name: (g.score, g.max_score) for g in nb.grades}

