"""The checks behind the nbgrader test cells, one module per lesson (``lesson01.py`` ...).

A hidden test cell is one line, e.g. ``lesson03.check_backward(backward)``, so that the feedback a
student reads shows the diagnosis from ``gradlab.check`` rather than the test code (nbgrader prints
hidden test code in the feedback by design). ``common.py`` holds what every lesson's checks share.
"""
