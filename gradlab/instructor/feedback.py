"""Feedback that shows a student the diagnosis of a hidden test, but not the hidden test's code.

nbgrader restores hidden tests at autograde and, by design, prints them in the feedback (nbgrader #917).
``HideHiddenTests`` (added to ``GenerateFeedback.preprocessors`` in grader/nbgrader_config.py) replaces each
hidden-test region of a test cell with one comment line, and cuts the traceback of that cell's errors to
the error's message, because a traceback quotes the lines around the failing one. The message is what a
student needs: gradlab.check writes the whole explanation into it (expected vs got, largest difference,
likely cause). The autograded notebooks keep everything; only the HTML a student receives changes.

A student's code could read the hidden tests while they ran (IPython keeps every cell's source) and print
them, or quote them in an exception message. So every line of hidden-test code is also cut out of every
output of every cell, wherever it appears.
"""
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode

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
    """Cut every hidden-test line out of one output's text, wherever it hides (stream, error, any text data)."""
    def clean(text):
        if isinstance(text, list):
            text = "".join(text)
        if not isinstance(text, str):
            return text
        for line in secret:
            text = text.replace(line, CUT)
        return text

    if "text" in output:
        output["text"] = clean(output["text"])
    if output.get("output_type") == "error":
        output["evalue"] = clean(output.get("evalue", ""))
        output["traceback"] = [clean(t) for t in output.get("traceback", [])]
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            output["data"][mime] = clean(value) if isinstance(value, (str, list)) else value
