"""A corpus of real backprop mistakes, re-expressed against the course's computations, and a runner that
measures how each diagnosis names them (cases.py, exercises.py, runner.py)."""
