"""The course's nbgrader configuration and gradlab's nbgrader pieces, without running nbgrader."""
import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from nbgrader.converters import Autograde, GenerateFeedback
from traitlets.config.loader import PyFileConfigLoader

from gradlab.instructor import execute, grade_table
from gradlab.instructor import feedback as feedback_filter
from gradlab.instructor import repair as autograde_repair

from course import GRADER_CONFIG


@pytest.fixture(scope="module")
def config():
    return PyFileConfigLoader(GRADER_CONFIG.name, path=str(GRADER_CONFIG.parent)).load_config()


def _full(name):
    """A default preprocessor as the config names it: nbgrader.preprocessors.X / nbconvert.preprocessors.X."""
    package, _, cls = name.rpartition(".")
    return f"{package.split('.')[0]}.preprocessors.{cls}"


@pytest.mark.parametrize("converter, trait, replaced", [
    (Autograde, "sanitize_preprocessors", {"DeduplicateIds": "gradlab.instructor.repair.RepairCellMetadata",
                                           "OverwriteCells": "gradlab.instructor.repair.RestoreCells"}),
    (Autograde, "autograde_preprocessors", {"Execute": ["gradlab.instructor.execute.TrustedExecute",
                                                        "gradlab.instructor.sanitize.CleanMarkdown"]}),
])
def test_pipelines_are_nbgraders_with_only_gradlabs_replacements(config, converter, trait, replaced):
    defaults = [_full(f"{p.__module__}.{p.__name__}") for p in converter.class_traits()[trait].default()]
    expected = []
    for name in defaults:
        instead = replaced.get(name.rpartition(".")[2], name)
        expected += instead if isinstance(instead, list) else [instead]
    assert config[converter.__name__][trait] == expected


def test_feedback_adds_only_the_hidden_test_filter(config):
    defaults = [_full(f"{p.__module__}.{p.__name__}") for p in GenerateFeedback.class_traits()["preprocessors"].default()]
    assert config.GenerateFeedback.preprocessors == defaults + ["gradlab.instructor.feedback.HideHiddenTests"]


def test_feedback_pages_use_gradlabs_template_and_the_formgrader_keeps_nbgraders(config, tmp_path):
    """GenerateFeedback builds gradlab's exporter, whose template extends nbgrader's 'feedback' even though
    GenerateFeedback sets HTMLExporter.template_name = 'feedback'; only sanitize_html is set for plain HTMLExporter,
    which the formgrader renders its own pages with (tests/test_feedback_page.py opens the pages)."""
    from nbgrader.coursedir import CourseDirectory

    assert config.GenerateFeedback.exporter_class == "gradlab.instructor.feedback.FeedbackExporter"
    assert dict(config.HTMLExporter) == {"sanitize_html": True}, "the formgrader keeps nbgrader's templates"
    converter = GenerateFeedback(coursedir=CourseDirectory(config=config, root=str(tmp_path)), config=config)
    exporter = converter.exporter_class(parent=converter, config=converter.config)
    assert isinstance(exporter, feedback_filter.FeedbackExporter)
    assert converter.config.HTMLExporter.template_name == "feedback"
    assert exporter.template_name == "gradlab_feedback" and exporter.template is not None
    assert feedback_filter.TEMPLATES.as_posix() in exporter.template_paths[0]
    assert any(path.endswith("formgrader/templates/feedback") for path in exporter.template_paths)


def test_the_course_settings_the_issue_asks_for(config):
    assert config.CourseDirectory.source_directory == "../notebooks"
    assert config.OverwriteCells.add_missing_cells is True
    assert config.Execute.timeout == 60 and config.Execute.interrupt_on_timeout is True
    assert config.Sandbox.memory_limit_mb > 0
    assert config.Autograde.exporter_class == "gradlab.instructor.repair.ReadableNotebookExporter"
    stub = config.ClearSolutions.code_stub["python"]
    assert stub.splitlines()[0] == "# YOUR CODE HERE" and "Replace this line with your solution" in stub


@pytest.mark.parametrize("path, student, notebook", [
    ("/c/downloaded/03-backprop-by-hand/extracted/alice_backprop-by-hand.ipynb", "alice", "backprop-by-hand"),
    ("/c/downloaded/a/extracted/sub/smithjane_12345_67890_backprop-by-hand.ipynb", "smithjane", "backprop-by-hand"),
    ("/c/downloaded/a/extracted/smithjane_LATE_12345_67890_backprop-by-hand-2.ipynb", "smithjane", "backprop-by-hand"),
    ("/c/downloaded/a/extracted/bob.k_one-neuron.ipynb", "bob.k", "one-neuron"),
])
def test_zip_collect_reads_student_and_notebook_from_lms_file_names(config, path, student, notebook):
    match = re.match(config.FileNameCollectorPlugin.named_regexp, path)
    assert match and match["student_id"] == student and match["file_id"] == notebook


def test_zip_collect_skips_files_without_a_student(config):
    assert re.match(config.FileNameCollectorPlugin.named_regexp, "/c/downloaded/a/extracted/backprop-by-hand.ipynb") is None


# --------------------------------------------------------------------------- hidden tests in feedback
def _test_cell(source):
    return new_code_cell(source, metadata={"nbgrader": {"grade": True, "grade_id": "t", "locked": True, "points": 1,
                                                        "schema_version": 3, "solution": False}})


def _hide(cell):
    nb = new_notebook(cells=[cell])
    nb, _ = feedback_filter.HideHiddenTests().preprocess(nb, {})
    return nb.cells[0]


def test_hidden_region_becomes_one_comment_and_errors_keep_only_their_message():
    cell = _test_cell("x = 1\n    ### BEGIN HIDDEN TESTS\n    secret(x)\n    more()\n    ### END HIDDEN TESTS\nafter()")
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="dJ/dw: wrong sign",
                                           traceback=["---> secret(x)", "AssertionError: dJ/dw: wrong sign"])]
    hidden = _hide(cell)
    assert hidden.source == f"x = 1\n    {feedback_filter.PLACEHOLDER}\nafter()"
    assert hidden.outputs[0].traceback == ["AssertionError: dJ/dw: wrong sign"]


def test_an_unclosed_hidden_region_is_hidden_to_the_end():
    assert _hide(_test_cell("a\n### BEGIN HIDDEN TESTS\nsecret()")).source == f"a\n{feedback_filter.PLACEHOLDER}"


def test_cells_without_hidden_tests_and_student_cells_are_left_alone():
    visible = _test_cell("assert f(2) == 4")
    visible.outputs = [nbformat.v4.new_output("error", ename="E", evalue="v", traceback=["frame", "E: v"])]
    assert _hide(visible).outputs[0].traceback == ["frame", "E: v"]
    student = new_code_cell("# BEGIN HIDDEN TESTS is just text here", metadata={
        "nbgrader": {"grade": False, "grade_id": "s", "locked": False, "schema_version": 3, "solution": True}})
    assert _hide(student).source == "# BEGIN HIDDEN TESTS is just text here"


def test_without_hidden_tests_matches_what_nbgrader_releases():
    from nbgrader.preprocessors import ClearHiddenTests

    cell = _test_cell("check()\n### BEGIN HIDDEN TESTS\nsecret()\n### END HIDDEN TESTS\n")
    released = ClearHiddenTests().preprocess(new_notebook(cells=[nbformat.from_dict(json.loads(json.dumps(cell)))]),
                                             {})[0].cells[0]
    assert autograde_repair.without_hidden_tests(cell.source) == released.source


# --------------------------------------------------------------------------- unreadable files
def test_an_unreadable_reason_names_the_place_in_the_json():
    with pytest.raises(Exception) as caught:
        nbformat.reads('{"cells": [1,\n  2,, 3]}', as_version=4)
    assert autograde_repair.unreadable_reason(caught.value) == "not valid JSON: Expecting value (line 2, column 5)"


def test_the_stand_in_notebook_explains_and_is_valid():
    nb = autograde_repair.unreadable_stand_in("/x/submitted/s/a/lesson.ipynb", "not valid JSON: oops")
    nbformat.validate(nb)
    assert "`lesson.ipynb`" in nb.cells[0].source and "not valid JSON: oops" in nb.cells[0].source


def test_a_restored_cell_goes_next_to_its_nearest_surviving_neighbour():
    cells = ["intro", "a", "c"]  # stand-ins for cells; "b" and "test_b" were deleted, "test_a" too
    order = ["a", "test_a", "b", "test_b", "c"]
    present = {"a": cells[1], "c": cells[2]}
    assert autograde_repair._position(cells, order, present, "test_a") == 2  # after a
    assert autograde_repair._position(cells, order, present, "test_b") == 2  # after a: b is gone too
    assert autograde_repair._position(cells, ["x", "a"], {"a": cells[1]}, "x") == 1  # before a
    assert autograde_repair._position(cells, ["x"], {}, "x") == 3  # nothing left: at the end


# --------------------------------------------------------------------------- timeout message, grade table
def test_the_timeout_message_says_how_long():
    executor = execute.TrustedExecute(timeout=7)
    assert "after 7 s" in executor.error_on_timeout["evalue"]


def test_grade_table_shows_each_cell_and_marks_what_is_missing():
    columns = [("test_forward", 1.0), ("test_backward", 2.0)]
    table = {"ann": {"test_forward": 1.0, "test_backward": 0.0}, "bob": {"test_forward": None, "test_backward": 2.0},
             "cy": None}
    lines = grade_table.render("lesson", columns, table).splitlines()
    assert lines[1].split() == ["student", "forward", "backward", "total"]
    assert lines[2].split() == ["ann", "1", "0", "1", "/", "3"]
    assert lines[3].split() == ["bob", "?", "2", "?", "/", "3"]
    assert lines[4].split() == ["cy", "-", "-", "-", "/", "3"]
    assert lines[5].split() == ["out", "of", "1", "2", "3"]
