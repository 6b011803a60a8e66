"""The test suite's notebook runner and temporary nbgrader course (tests/course.py), loaded without pytest.

tests/ is not a package, so the file is loaded by path: the benchmark executes notebooks and runs
nbgrader exactly as the tests do.
"""
import importlib.util

from .lesson_code import ROOT

_spec = importlib.util.spec_from_file_location("gradlab_tests_course", ROOT / "tests" / "course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)

execute = course.execute
Course = course.Course
