"""Run a hidden check both ways the grader runs it, and check that they agree.

``local`` is the check as the instructor's own run of a lesson sees it; ``recorded_and_replayed`` records the
calls of student code, round-trips the record through JSON as the kernel would send it, and judges it in
replay, where the student's functions are never called. A check that follows the rules in
gradlab/grading/common.py gives the same verdict and the same message both ways.
"""
from gradlab.grading import trial


def local(check, *args, **kwargs):
    """None if the check passes, else the AssertionError."""
    try:
        check(*args, **kwargs)
    except AssertionError as err:
        return err
    return None


def recorded_and_replayed(check, *args, **kwargs):
    payload = trial.record_here(check, *args, **kwargs)
    placeholders = [None if callable(a) else a for a in args]
    return trial.replay(check, payload, placeholders, kwargs)


def both(check, *args, **kwargs):
    """(local error or None, replayed Verdict), after asserting that they agree."""
    err = local(check, *args, **kwargs)
    verdict = recorded_and_replayed(check, *args, **kwargs)
    assert verdict.problem is None, verdict.problem
    assert verdict.ok == (err is None), (err, verdict.message)
    if err is not None:
        assert verdict.message == str(err)
    return err, verdict
