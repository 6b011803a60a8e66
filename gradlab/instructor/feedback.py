"""The feedback page a student receives (``nbgrader generate_feedback``): readable, offline, hidden tests hidden.

``HideHiddenTests`` (added to ``GenerateFeedback.preprocessors`` in grader/nbgrader_config.py): nbgrader restores
hidden tests at autograde and, by design, prints them in the feedback (nbgrader #917). This preprocessor replaces
each hidden-test region of a test cell with one comment line, and cuts the traceback of that cell's errors to
the error's message, because a traceback quotes the lines around the failing one. The message is what a
student needs: gradlab.check writes the whole explanation into it (expected vs got, largest difference,
likely cause). The autograded notebooks keep everything; only the HTML a student receives changes.

A student's code could read the hidden tests while they ran (IPython keeps every cell's source) and print
them, or quote them in an exception message. So every line of hidden-test code is also cut out of every
output of every cell, wherever it appears (text, HTML, SVG; also in its HTML-escaped form).

``FeedbackExporter`` (``GenerateFeedback.exporter_class``) is nbconvert's HTMLExporter with the template
``gradlab_feedback`` (gradlab/instructor/templates/), which extends nbgrader's ``feedback`` template: long
explanations and printouts wrap inside their box, a test's picture (SVG) gets its description as alt text,
and MathJax 3 (fetched by ``make setup``, gradlab.instructor.mathjax) is inlined in the page with a
Content-Security-Policy that forbids any request to the network, so formulas render with no network at all.
Without the MathJax file the page falls back to nbgrader's MathJax from a CDN, and the log says so.
"""
import html
import re
from pathlib import Path

import markupsafe
from nbconvert.exporters import HTMLExporter
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode, default, validate

from . import mathjax

PLACEHOLDER = "# (hidden tests: they ran at grading, on inputs you have not seen; their verdict is below)"
CUT = "[hidden test code]"
MIN_SECRET = 8  # shorter lines (`else:`, `x = 1`) say nothing about the tests and would mangle ordinary output


class HideHiddenTests(NbGraderPreprocessor):
    # nbconvert's HTML exporter sets this option for every preprocessor; declared configurable (as nbgrader's
    # GetGrades does), traitlets stops warning on each run that it is not recognised.
    display_data_priority = List(NbGraderPreprocessor.display_data_priority.default_value).tag(config=True)
    begin = Unicode("BEGIN HIDDEN TESTS", help="Marks the start of a hidden-test region.").tag(config=True)
    end = Unicode("END HIDDEN TESTS", help="Marks the end of a hidden-test region.").tag(config=True)

    def preprocess(self, nb, resources):
        self._secret = sorted({line.strip() for cell in nb.cells if cell.cell_type == "code" and utils.is_grade(cell)
                               for line in self._hidden_lines(cell.source) if len(line.strip()) >= MIN_SECRET},
                              key=len, reverse=True)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                _scrub(output, self._secret)
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            return cell, resources
        source, hidden = self._without_hidden(cell.source)
        if hidden:
            cell.source = source
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources

    def _hidden_lines(self, source):
        inside, lines = False, []
        for line in source.split("\n"):
            if self.begin in line:
                inside = True
            elif self.end in line and inside:
                inside = False
            elif inside:
                lines.append(line)
        return lines

    def _without_hidden(self, source):
        """(source with each hidden region replaced by PLACEHOLDER, whether there was one).

        A region left open runs to the end of the cell: hiding too much is the safe side.
        """
        lines, hidden, inside = [], False, False
        for line in source.split("\n"):
            if self.begin in line:
                if not inside:
                    indent = line[: len(line) - len(line.lstrip())]
                    lines.append(indent + PLACEHOLDER)
                inside = hidden = True
            elif self.end in line and inside:
                inside = False
            elif not inside:
                lines.append(line)
        return "\n".join(lines), hidden


def _scrub(output, secret):
    """Cut every hidden-test line out of one output's text, wherever it hides (stream, error, any text data,
    HTML and SVG, where it may also appear HTML-escaped)."""
    def clean(text, markup=False):
        if isinstance(text, list):
            text = "".join(text)
        if not isinstance(text, str):
            return text
        for line in secret:
            text = text.replace(line, CUT)
            if markup:
                for escaped in {html.escape(line, quote=False), html.escape(line)}:
                    text = text.replace(escaped, CUT)
        return text

    if "text" in output:
        output["text"] = clean(output["text"])
    if output.get("output_type") == "error":
        output["evalue"] = clean(output.get("evalue", ""))
        output["traceback"] = [clean(t) for t in output.get("traceback", [])]
    for mime, value in output.get("data", {}).items():
        markup = mime == "text/html" or mime.endswith("+xml")
        if mime.startswith("text/") or mime.endswith("json") or markup:
            output["data"][mime] = clean(value, markup) if isinstance(value, (str, list)) else value


# --------------------------------------------------------------------------- the page
TEMPLATES = Path(__file__).resolve().parent / "templates"


def nbgrader_templates():
    """nbgrader's own template folder, where its ``feedback`` template lives."""
    import nbgrader

    return Path(nbgrader.__file__).resolve().parent / "server_extensions" / "formgrader" / "templates"


def nbgrader_css():
    """The folder of bootstrap.min.css, which the ``feedback`` template inlines (GenerateFeedback puts it on the
    template path; so does FeedbackExporter, for use outside nbgrader)."""
    return nbgrader_templates().parent / "static" / "node_modules" / "bootstrap" / "dist" / "css"


class FeedbackExporter(HTMLExporter):
    """nbgrader's feedback HTML with gradlab's template: wrapped explanations, pictures, offline formulas.

    Configured as ``GenerateFeedback.exporter_class``; its own config section (``FeedbackExporter``) keeps the
    template away from the formgrader, which renders with plain HTMLExporter settings.
    """

    mathjax_file = Unicode(help="MathJax 3's es5/tex-svg-full.js, inlined in every page. Default: where "
                                "`make setup` puts it (gradlab.instructor.mathjax).").tag(config=True)

    @default("mathjax_file")
    def _default_mathjax_file(self):
        return str(mathjax.default_path())

    @default("template_name")
    def _default_template_name(self):
        return "gradlab_feedback"

    @default("extra_template_basedirs")
    def _default_basedirs(self):
        return [str(TEMPLATES), str(nbgrader_templates())]

    @validate("extra_template_basedirs")
    def _with_gradlab_and_nbgrader(self, proposal):
        """Whatever else is configured (GenerateFeedback sets nbgrader's folder), gradlab's and nbgrader's
        template folders are searched, after any folder configured with a template of the same name."""
        dirs = list(proposal["value"])
        return dirs + [d for d in (str(TEMPLATES), str(nbgrader_templates())) if d not in dirs]

    @default("template_paths")
    def _template_paths(self, prune=True, root_dirs=None):
        """nbconvert's search path, then the template folders themselves, so that gradlab_feedback can extend
        nbgrader's template by its name, 'feedback/index.html.j2', and bootstrap's CSS folder."""
        paths = super()._template_paths(prune, root_dirs)
        return paths + [p for p in [*self.extra_template_basedirs, str(nbgrader_css())] if p not in paths]

    def _create_environment(self):
        environment = super()._create_environment()
        environment.globals["gradlab_mathjax"] = self.inlined_mathjax
        return environment

    def inlined_mathjax(self):
        """MathJax as one inline <script> element, or "" (with a warning, once) when the file is missing."""
        if getattr(self, "_mathjax_script", None) is None:
            path = Path(self.mathjax_file)
            try:
                code = path.read_text(encoding="utf-8")
            except OSError as err:
                self.log.warning("MathJax for offline formulas not found (%s: %s): these feedback pages load "
                                 "MathJax from a CDN, so a student without network sees raw LaTeX. Run `make setup` "
                                 "(needs npm) or set c.FeedbackExporter.mathjax_file.", path, err.strerror or err)
                code = ""
            self._mathjax_script = markupsafe.Markup(f"<script>\n{_script_safe(code)}\n</script>") if code else ""
        return self._mathjax_script


def _script_safe(code):
    """JavaScript that cannot end or confuse its inline <script> element. In the pinned MathJax file "</script"
    and "<!--" occur only inside strings and non-unicode regular expressions, where "<\\/" and "<\\!" mean the
    same (the browser test runs the result)."""
    return re.sub(r"<(?=/script|!--)", r"<\\", code, flags=re.IGNORECASE)
