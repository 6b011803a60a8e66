"""A student's own markdown, made safe to render in the instructor's browser.

nbgrader's formgrader renders an autograded notebook with nbconvert's HTMLExporter and its own "formgrade"
template, whose markdown cells bypass ``HTMLExporter.sanitize_html`` (which grader/nbgrader_config.py turns on for
outputs): a ``<script>`` or an ``onerror=`` in a student's markdown would run there, on the Jupyter server's origin
with the instructor's session. ``CleanMarkdown`` runs in the autograde pipeline right after the kernel (serial or
parallel grading alike) and passes every markdown cell that is not the lesson's own, as released, through bleach,
the sanitizer nbconvert itself uses: tags it does not allow are shown as text.
"""
from pathlib import Path

import bleach
import nbformat
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor


class CleanMarkdown(NbGraderPreprocessor):
    def preprocess(self, nb, resources):
        released = _lesson_markdown(self.config, resources.get("nbgrader", {}))
        for cell in nb.cells:
            if cell.cell_type == "markdown" and cell.source not in released:
                cell.source = bleach.clean(cell.source)
        return nb, resources


def _lesson_markdown(config, info):
    """The markdown sources of the lesson's source notebook ({} where it is not at hand: then every cell is cleaned)."""
    if not (info.get("assignment") and info.get("notebook")):
        return set()
    coursedir = CourseDirectory(config=config)
    path = Path(coursedir.format_path(coursedir.source_directory, ".", info["assignment"])) / f"{info['notebook']}.ipynb"
    if not path.exists():
        return set()
    return {c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"}
