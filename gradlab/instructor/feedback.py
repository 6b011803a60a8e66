"""Feedback that shows a student the diagnosis of a hidden test, but not the hidden test's code.

nbgrader restores hidden tests at autograde and, by design, prints them in the feedback (nbgrader #917).
``HideHiddenTests`` (added to ``GenerateFeedback.preprocessors`` in grader/nbgrader_config.py) replaces each
hidden-test region of a test cell with one comment line, and cuts the traceback of that cell's errors to
the error's message, because a traceback quotes the lines around the failing one. The message is what a
student needs: gradlab.check writes the whole explanation into it (expected vs got, largest difference,
likely cause). The autograded notebooks keep everything; only the HTML a student receives changes.
"""
from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode

PLACEHOLDER = "# (hidden tests: they ran at grading, on inputs you have not seen; their verdict is below)"


class HideHiddenTests(NbGraderPreprocessor):
    # nbconvert's HTML exporter sets this option for every preprocessor; declared configurable (as nbgrader's
    # GetGrades does), traitlets stops warning on each run that it is not recognised.
    display_data_priority = List(NbGraderPreprocessor.display_data_priority.default_value).tag(config=True)
    begin = Unicode("BEGIN HIDDEN TESTS", help="Marks the start of a hidden-test region.").tag(config=True)
    end = Unicode("END HIDDEN TESTS", help="Marks the end of a hidden-test region.").tag(config=True)

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            return cell, resources
        source, hidden = self._without_hidden(cell.source)
        if hidden:
            cell.source = source
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources

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
