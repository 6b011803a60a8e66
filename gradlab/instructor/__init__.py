"""The instructor's side of grading: the sandboxed kernel, the trusted verdicts, repairs, reports.

Lessons never import this package; a student's kernel does not need it.
"""
