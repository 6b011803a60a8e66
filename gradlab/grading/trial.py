"""Record a hidden check in the student's kernel, replay it in the trusted grader.

A hidden check (``@common.graded``) runs in one of three modes:

- **local**: everything in one process, as in the instructor's own run of a lesson source. A wrong answer
  raises AssertionError with the explanation.
- **record**: in the sandboxed kernel of ``nbgrader autograde`` (the grader sets GRADLAB_RECORD=1). The
  check runs as in local mode, but every call of student code (``common.call_student``) is written down:
  what it returned or raised, what it changed in place, whether it used autograd, how long it took. At the
  end the record is published as one display_data output with the MIME type ``MIME``; whether the kernel
  thinks the answer is right does not matter.
- **replay**: in the grader's own process, which never runs student code. The same check function runs
  again on the same seeded inputs, and each ``call_student`` returns what the record says the student's
  code returned. Every expected value and every comparison is the grader's, so nothing the student's code
  did to its kernel (replaced functions, forged outputs, a cell wrapped in try/except) can make a wrong
  answer pass: a forged record would have to hold the right answers for the grader's own inputs.

The record is data (gradlab.grading.wire), never code; replay refuses a record that does not fit the
calls the check makes.
"""
import contextlib
import json
import os
import threading

from . import wire

MIME = "application/vnd.gradlab.record+json"
ENV_RECORD = "GRADLAB_RECORD"
VERSION = 1

_state = threading.local()


def current():
    """The Trial of the check now running, or None outside any check."""
    return getattr(_state, "trial", None)


class Trial:
    """One run of one check: its mode, the calls of student code, what the check found."""

    def __init__(self, mode, check, events=None):
        self.mode = mode  # "local", "record" or "replay"
        self.check = check  # "lesson03.check_backward"
        self.events = [] if events is None else events
        self.position = 0  # replay: the next event to hand out
        self.seconds = 0.0  # time spent in student code, as measured by the kernel
        self.outcomes = []  # (gradient, status, kind, case) of every comparison made
        self.notes = []
        self.failure = None

    def next_event(self, name):
        if self.position >= len(self.events):
            raise RecordEnded(name)
        event = self.events[self.position]
        self.position += 1
        if not isinstance(event, dict) or event.get("name") != name:
            raise wire.Malformed(f"the record has a call of {event.get('name') if isinstance(event, dict) else event!r} "
                                 f"where the check calls `{name}`")
        return event


class RecordEnded(Exception):
    """Replay needs a call that the kernel did not record (it stopped earlier than the grader did)."""


@contextlib.contextmanager
def running(trial):
    previous = current()
    _state.trial = trial
    try:
        yield trial
    finally:
        _state.trial = previous


def record_mode():
    return os.environ.get(ENV_RECORD) == "1"


def publish(trial, kernel_verdict):
    """Send the record of a finished check to the grader, as one display_data output of the running cell."""
    payload = {"version": VERSION, "check": trial.check, "events": trial.events, "kernel_verdict": kernel_verdict}
    try:
        text = json.dumps(payload, allow_nan=True)
    except (TypeError, ValueError) as err:
        text = json.dumps({"version": VERSION, "check": trial.check, "events": [],
                           "kernel_verdict": f"the record could not be written: {err}"})
    from IPython.display import publish_display_data

    publish_display_data({MIME: text, "text/plain": f"(record of {trial.check} for the grader)"})


def parse(text):
    """A record as published, checked for shape; raises wire.Malformed."""
    try:
        payload = json.loads(text)
    except (TypeError, ValueError) as err:
        raise wire.Malformed(f"not JSON: {err}") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION or not isinstance(payload.get("events"), list):
        raise wire.Malformed("not a gradlab record")
    if not isinstance(payload.get("check"), str):
        raise wire.Malformed("a record without its check's name")
    return payload


class Verdict:
    """The grader's verdict on one check: passed or not, the message, the mistake's label, what was compared."""

    def __init__(self, check, ok, message="", kind=None, gradient=None, outcomes=(), notes=(), problem=None,
                 figure=None, detail=None):
        self.check, self.ok, self.message = check, ok, message
        self.detail = detail  # for a check that did not run: the kernel's error and whether the kernel stopped
        self.kind, self.gradient, self.figure = kind, gradient, figure
        self.outcomes, self.notes = list(outcomes), list(notes)
        self.problem = problem  # set when the grader itself could not judge (a bug to report, not a student mistake)

    def as_dict(self):
        return {"check": self.check, "ok": self.ok, "message": self.message, "kind": self.kind,
                "gradient": self.gradient, "outcomes": self.outcomes, "notes": self.notes, "problem": self.problem,
                "detail": self.detail}


def replay(check, payload, args=(), kwargs=None):
    """Judge a record: run ``check`` (a @graded function) in this process, handing out the recorded calls."""
    t = Trial("replay", check.check_name, list(payload.get("events", [])))
    with running(t):
        try:
            check.check(*args, **(kwargs or {}))
        except AssertionError as err:
            figure = getattr(err, "figure", None)
            return Verdict(t.check, False, str(err), getattr(err, "kind", None), getattr(err, "gradient", None),
                           t.outcomes, t.notes, figure=figure if isinstance(figure, str) else None)
        except RecordEnded as missing:
            return Verdict(t.check, False, (
                f"the check could not finish: it needs a call of `{missing.args[0]}` that your notebook never made. "
                "Did the cell stop early, or did your code change the check?"), "incomplete", None, t.outcomes, t.notes)
        except (wire.Malformed, KeyError, TypeError, ValueError, IndexError) as err:
            return Verdict(t.check, False, f"what your notebook's kernel sent for this check cannot be read ({err}).",
                           "malformed", None, t.outcomes, t.notes, problem=None)
        except Exception as err:  # a fault of the grader's own code: reported to the instructor, not blamed on the student
            return Verdict(t.check, False, "the grader could not judge this check; your instructor has been told.",
                           "grader error", None, t.outcomes, t.notes, problem=f"{type(err).__name__}: {err}")
    return Verdict(t.check, True, "", None, None, t.outcomes, t.notes)


def record_here(check, *args, **kwargs):
    """Record ``check`` in this process, as the kernel would, and return the payload as it would arrive (JSON)."""
    t = Trial("record", check.check_name)
    with running(t):
        try:
            check.check(*args, **kwargs)
            verdict = "passed"
        except AssertionError:
            verdict = "failed"
    return parse(json.dumps({"version": VERSION, "check": t.check, "events": t.events, "kernel_verdict": verdict},
                            allow_nan=True))
