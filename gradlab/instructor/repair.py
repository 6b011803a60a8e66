"""What `nbgrader autograde` does with a broken submission, so that it costs only the cells it breaks.

grader/nbgrader_config.py puts these in nbgrader 0.9's pipeline; an instructor's plain
`nbgrader autograde <lesson>` uses them:

- ``ReadableNotebookExporter`` (``Autograde.exporter_class``): a file that is not a notebook (not JSON,
  not UTF-8, JSON that is no notebook) is graded as an empty notebook carrying a note that says why,
  instead of failing that student with a traceback in the log only. The submitted file is not touched.
- ``RepairCellMetadata`` (in ``Autograde.sanitize_preprocessors``, instead of nbgrader's DeduplicateIds):
  a copied cell keeps the original's grading metadata; nbgrader empties the metadata of all copies but
  the last, and the emptied metadata then stops the whole run with a misleading "old version of the
  metadata" error (nbgrader #1083). Here the copy becomes an ordinary cell (it still runs) with a note,
  and so does a cell whose grading metadata is damaged.
- ``RestoreCells`` (instead of nbgrader's OverwriteCells): nbgrader's restoring of deleted test cells
  (``OverwriteCells.add_missing_cells``) fails with a KeyError when the cell before a deleted test cell
  is gone too (a deleted exercise and its test); this places each restored cell next to its nearest
  surviving neighbour from the source, gives it a cell id, turns cells the gradebook does not know into
  ordinary cells, and warns about an edited test cell only when a student edited it.
"""
import json
import os
import re
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbgrader import utils
from nbgrader.api import MissingEntry
from nbgrader.nbgraderformat import MetadataValidator
from nbgrader.preprocessors import NbGraderPreprocessor, OverwriteCells
from traitlets.log import get_logger

UNREADABLE_NOTE_ID = "gradlab-unreadable-submission"


class ReadableNotebookExporter(NotebookExporter):
    """nbgrader's notebook exporter, except that an unreadable file becomes an explained empty notebook."""

    def from_file(self, file_stream, resources=None, **kw):
        try:
            text = file_stream.read()
            if isinstance(text, str) and text.startswith(LINK_MARKER):
                raise _RemovedLink(text[len(LINK_MARKER):].strip())
            nb = nbformat.reads(text, as_version=4)
        except Exception as err:  # whatever a student's file holds; the log and the feedback say what
            path = getattr(file_stream, "name", "the submitted notebook")
            reason = unreadable_reason(err)
            self.log.error(
                "%s is not a readable notebook (%s). It is graded as an empty notebook: every test scores 0 and "
                "its feedback says why. The file itself is unchanged; once a readable copy is in its place, "
                "autograde this student again with --force.", path, reason,
            )
            nb = unreadable_stand_in(path, reason)
        return self.from_notebook_node(nb, resources=resources, **kw)


# What drop_outside_links leaves in place of a submitted notebook that was a symlink out of the submission.
LINK_MARKER = "gradlab: this notebook was a symbolic link out of the submission, to "


class _RemovedLink(Exception):
    pass


def unreadable_reason(err):
    """One line a student can act on: where the JSON breaks, or what else is wrong with the file."""
    if isinstance(err, _RemovedLink):
        return (f"a symbolic link to a file outside your submission ({err}), not a notebook: the grader reads "
                "only files handed in")
    cause = err.__cause__ if isinstance(err.__cause__, json.JSONDecodeError) else err
    if isinstance(cause, json.JSONDecodeError):
        return f"not valid JSON: {cause.msg} (line {cause.lineno}, column {cause.colno})"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 text (byte {err.start} cannot be decoded): is it a notebook at all?"
    return f"not a Jupyter notebook: {type(err).__name__}: {str(err)[:200]}"


def unreadable_stand_in(path, reason):
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    note = nbformat.v4.new_markdown_cell(
        f"**Grader's note: this submission could not be read.** The file `{name}` that was collected is "
        f"{reason}.\n\nThis usually means the file was cut short while saving or uploading, or edited outside "
        "Jupyter. None of your code could run, so every test below scores 0. Your file has been kept exactly as "
        "it was handed in: ask your instructor to grade a readable copy (open the file in JupyterLab, or in a "
        "text editor at the place named above, to see what went wrong)."
    )
    note.id = UNREADABLE_NOTE_ID
    return nbformat.v4.new_notebook(cells=[note])


class RepairCellMetadata(NbGraderPreprocessor):
    """Turn the copies of a graded cell, and cells with damaged grading metadata, into ordinary cells.

    Of several cells with one grade_id the last keeps it, as with nbgrader's DeduplicateIds; all copies
    still run in their order, as they did in the student's notebook. A note above each demoted cell tells
    the student (in the feedback) what happened.
    """

    def preprocess(self, nb, resources):
        validator = MetadataValidator()
        seen = set()
        for index in reversed(range(len(nb.cells))):
            cell = nb.cells[index]
            if "nbgrader" not in cell.metadata:
                continue
            problem = _metadata_problem(validator, cell)
            grade_id = cell.metadata.nbgrader.get("grade_id")
            if problem is None and _has_id(cell):
                if grade_id in seen:
                    problem = f"a second copy of the cell `{grade_id}` (a copied cell keeps the original's grading label)"
                seen.add(grade_id)
            if problem is None:
                continue
            self.log.warning(
                "%s: cell %d is %s; it runs as an ordinary cell.", submission(resources), index + 1, problem
            )
            del cell.metadata["nbgrader"]
            note = nbformat.v4.new_markdown_cell(
                f"**Grader's note:** the code cell below is {problem}. It still runs, in its place, but as an "
                "ordinary cell: the grader only counts the last copy of a graded cell."
            )
            _set_id(nb, note, f"gradlab-note-{index}")
            nb.cells.insert(index, note)
        return nb, resources


def _metadata_problem(validator, cell):
    try:
        validator.validate_cell(cell)
    except Exception as err:  # jsonschema's ValidationError, nbgrader's SchemaMismatchError, KeyError, ...
        return f"a cell whose grading metadata is damaged ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return None


def _has_id(cell):
    return utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell)


def submission(resources):
    """student/assignment/notebook, for the log: nbgrader's own messages often leave out whose notebook it is."""
    info = resources.get("nbgrader", {})
    return f"{info.get('student', '?')}/{info.get('assignment', '?')}/{info.get('notebook', '?')}"


def _set_id(nb, cell, cell_id):
    """A fixed id (a random one would change the autograded file on every run) where the format has ids."""
    cell.pop("id", None)
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        cell["id"] = re.sub(r"[^A-Za-z0-9_-]", "-", cell_id)[:64]


class RestoreCells(OverwriteCells):
    """nbgrader's OverwriteCells, restoring deleted graded cells in the right place even when neighbours are gone,
    and warning about an edited test cell only when the student edited it.

    nbgrader compares a submitted test cell with the source cell, hidden tests included, so it warns "checksum
    has changed" for every test cell with hidden tests in every submission, and a real edit drowns in the noise.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        self._submission = submission(resources)
        self._restore_flags(cell)
        self._only_hidden_tests_differ = self._as_released(cell)
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        meta = cell.metadata.get("nbgrader")
        if meta is not None and "grade_id" not in meta:
            # nbgrader removed the grade_id of a cell the gradebook does not know, and its later metadata
            # check would then fail the whole notebook: make it an ordinary cell instead.
            del cell.metadata["nbgrader"]
        return cell, resources

    def _restore_flags(self, cell):
        """A cell's grade/solution/locked flags as the gradebook knows its grade_id: a student who marks an exercise
        as graded, or a test cell as an answer, made nbgrader stop that notebook (MissingEntry, a checksum error)."""
        meta = cell.metadata.get("nbgrader")
        name = meta.get("grade_id") if isinstance(meta, dict) else None
        if not name:
            return
        known = {}
        for flag, find in (("source", self.gradebook.find_source_cell), ("grade", self.gradebook.find_grade_cell),
                           ("solution", self.gradebook.find_solution_cell)):
            try:
                known[flag] = find(name, self.notebook_id, self.assignment_id)
            except MissingEntry:
                known[flag] = None
        if known["source"] is None:
            return
        for flag in ("grade", "solution"):
            if bool(meta.get(flag)) != (known[flag] is not None):
                self.log.warning("%s: cell %s was marked %s=%s; put back as the source has it.",
                                 self._submission, name, flag, bool(meta.get(flag)))
            meta[flag] = known[flag] is not None
        meta["locked"] = bool(known["source"].locked)

    def _as_released(self, cell):
        """Whether a locked cell's source is the source cell's with its hidden tests removed, as released."""
        if not utils.is_locked(cell):
            return False
        try:
            source = self.gradebook.find_source_cell(
                cell.metadata.nbgrader.get("grade_id"), self.notebook_id, self.assignment_id
            ).source
        except MissingEntry:
            return False
        return cell.source == without_hidden_tests(source)

    def report_change(self, name, attr, old, new):
        if attr != "checksum":
            super().report_change(name, attr, old, new)
        elif not self._only_hidden_tests_differ:
            self.log.warning("%s: cell %s differs from the released version (edited?); it is put back as in the source.",
                             self._submission, name)

    def add_missing_grade_cells(self, nb, resources):
        source = self.gradebook.find_notebook(self.notebook_id, self.assignment_id)
        order = [cell.name for cell in source.source_cells]
        source_cells = {cell.name: cell for cell in source.source_cells}
        solution_ids = {cell.name for cell in source.solution_cells}
        present = {
            cell.metadata.nbgrader["grade_id"]: cell
            for cell in nb.cells if "grade_id" in cell.metadata.get("nbgrader", {})
        }
        for grade_cell in sorted(source.grade_cells, key=lambda cell: order.index(cell.name)):
            if grade_cell.name in present:
                continue
            self.log.warning("%s: graded cell %s was missing; restored from the source.",
                             submission(resources), grade_cell.name)
            restored = self.missing_cell_transform(
                source_cells[grade_cell.name], grade_cell.max_score, is_solution=grade_cell.name in solution_ids
            )
            _set_id(nb, restored, f"restored-{grade_cell.name}")
            nb.cells.insert(_position(nb.cells, order, present, grade_cell.name), restored)
            present[grade_cell.name] = restored
        return nb, resources


def without_hidden_tests(source):
    """What nbgrader's ClearHiddenTests leaves of a cell's source: every line outside the hidden regions."""
    kept, inside = [], False
    for line in source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def _position(cells, order, present, name):
    """Right after the nearest earlier source cell still in the notebook, else right before the nearest later
    one, else at the end."""
    at = order.index(name)
    for neighbour in reversed(order[:at]):
        if neighbour in present:
            return _index_of(cells, present[neighbour]) + 1
    for neighbour in order[at + 1:]:
        if neighbour in present:
            return _index_of(cells, present[neighbour])
    return len(cells)


def _index_of(cells, cell):
    return next(i for i, c in enumerate(cells) if c is cell)


def drop_outside_links(assignment=None, student=None, notebooks=(), **_):
    """nbgrader's pre-convert hook: remove symlinks in a submission that point outside it.

    nbgrader copies a submission's other files into autograded/ (and from there into the feedback) following
    symlinks, with the grader's rights: a submitted link to a file of the grader's machine would bring that file's
    content to the student. Such a link can come from an exchange or an archive; nothing in a lesson needs one.
    The submission folder is the folder the notebooks were collected in, never where a link leads (a notebook
    that is itself a link must not move the clean-up elsewhere); a notebook that was such a link is replaced by a
    short text that the exporter grades as an unreadable notebook, saying why.
    """
    for folder in sorted({Path(os.path.abspath(nb)).parent for nb in notebooks}):
        clean_links(folder)


def clean_links(folder):
    """Remove the symlinks under a submission ``folder`` that lead out of it (see drop_outside_links)."""
    log = get_logger()  # the running nbgrader app's log, so the message lands where its others do
    inside = Path(os.path.realpath(folder))
    for root, dirs, files in os.walk(folder):  # never into a linked folder
        for name in sorted(dirs + files):
            path = Path(root) / name
            if not path.is_symlink() or inside in Path(os.path.realpath(path)).parents:
                continue
            target = os.readlink(path)
            log.warning("%s: removed the symlink %s, which points outside the submission (to %s).",
                        folder, path.relative_to(folder), target)
            path.unlink()
            if path.suffix == ".ipynb":
                path.write_text(LINK_MARKER + target + "\n")
