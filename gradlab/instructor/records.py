"""What autograde learned about each submission, kept as JSON beside the gradebook: records/<assignment>/<student>/<notebook>.json.

Written by the grader's own process (the student's sandboxed kernel cannot reach the course folder), read by the
grade table and the class report. One file per graded notebook holds every check's verdict (with the diagnosis
kind of the first mistake and every comparison's outcome), why the kernel stopped if it did, and the static
scan's flags.
"""
import json
import os
import tempfile
from pathlib import Path

FOLDER = "records"


def path(root, assignment, student, notebook):
    return Path(root) / FOLDER / assignment / student / f"{notebook}.json"


def save(root, info, data):
    """Write one notebook's record atomically (a reader never sees half a file)."""
    if not all(info.get(k) for k in ("assignment", "student", "notebook")):
        return None
    target = path(root, info["assignment"], info["student"], info["notebook"])
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"assignment": info["assignment"], "student": info["student"], "notebook": info["notebook"],
                       **data}, indent=1, default=str)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, target)
    return target


def load_all(root, assignment):
    """{student: {notebook: record}} for one assignment."""
    out = {}
    for file in sorted((Path(root) / FOLDER / assignment).glob("*/*.json")):
        out.setdefault(file.parent.name, {})[file.stem] = json.loads(file.read_text())
    return out
