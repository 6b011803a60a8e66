"""``TrustedExecute``: how autograde runs a student's notebook and scores its test cells.

It replaces nbgrader's Execute (grader/nbgrader_config.py) and differs from it in four ways:

1. The kernel runs in the sandbox (gradlab.instructor.sandbox).
2. A test cell's score comes from the grader, not from the kernel's output. The cell's trusted source
   (put back from the gradebook before execution) names its checks; each check sends a record of the
   student's calls (gradlab.grading.trial), and the grader replays it in this process. The cell's outputs
   are then rewritten: what the student's code printed (stderr folded into stdout, so a harmless warning
   costs nothing), then the grader's verdict as the last output: a line for a pass, an error for a fail.
   A cell whose checks sent nothing scores 0, whatever the kernel printed.
3. A kernel that dies, ignores the interrupt after a timeout, or runs past the notebook's time budget
   costs the cells that could not run; the cells before keep their scores, and each later cell says why
   it did not run. The run goes on with the next student.
4. Output is capped per cell and per notebook, in bytes, as it arrives.

What it learned (every check's verdict, every comparison's outcome and diagnosis, the static scan's flags)
goes to ``resources["gradlab"]``; gradlab.instructor.records keeps it beside the gradebook.
"""
import json
import os
import time
from pathlib import Path

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat.v4 import new_code_cell, new_output
from nbgrader import utils
from nbgrader.preprocessors import Execute
from traitlets import Integer, Unicode, default

from gradlab.grading import trial, wire

from . import records, sandbox, scan
from .checks import NotACheck, check_calls
from .repair import UNREADABLE_NOTE_ID, submission

VERDICT_NAME = "GradingResult"


class TrustedExecute(Execute):
    """nbgrader's Execute with a sandboxed kernel and test cells scored by the grader (module docstring)."""

    cell_output_limit = Integer(64_000, help="Bytes of a cell's output kept; the rest is dropped with a note.").tag(config=True)
    notebook_output_limit = Integer(1_000_000, help="Bytes of output kept for the whole notebook.").tag(config=True)
    record_limit = Integer(64_000_000, help="Bytes a check's record may take.").tag(config=True)
    records_per_cell = Integer(8, help="Records a test cell may send (its checks send one each); the rest are "
                                       "dropped and the cell is told so.").tag(config=True)
    notebook_timeout = Integer(1800, help="Seconds for the whole notebook; the cells after it do not run.").tag(config=True)
    plain_test_cells = Unicode("kernel", help="A test cell with no gradlab check: 'kernel' scores it from its output "
                                              "as nbgrader does (a student's code can fake that), 'fail' scores it 0."
                               ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sandboxed = sandbox.Sandbox(parent=self).active()
        if self.sandboxed:
            self.kernel_manager_class = sandbox.SandboxedKernelManager

    async def async_start_new_kernel(self, **kwargs):
        if not self.sandboxed:
            self.log.warning("The sandbox is off (c.Sandbox.enabled = False or GRADLAB_UNSANDBOXED=1): student code "
                             "runs with your rights.")
            kwargs["env"] = {**os.environ, trial.ENV_RECORD: "1", "NBGRADER_EXECUTION": "autograde"}
        try:
            await super().async_start_new_kernel(**kwargs)
        except sandbox.SandboxUnavailable as err:
            # nbgrader follows with its traceback; this is the line that says what to do
            self.log.error("%s: not graded, no student code ran: %s", submission(self.resources), err)
            raise

    start_new_kernel = run_sync(async_start_new_kernel)

    @default("store_widget_state")
    def _no_widget_state(self):
        return False

    @default("error_on_timeout")
    def _explained_timeout(self):
        message = f"the grader stopped this cell after {self.timeout} s. Does a loop in it (or in a function it calls) never end?"
        return {"ename": "CellTimeoutError", "evalue": message, "traceback": [f"CellTimeoutError: {message}"]}

    def on_cell_executed(self, **kwargs):
        super().on_cell_executed(**kwargs)
        if kwargs["execute_reply"]["content"].get("ename") == "CellTimeoutError":
            self.log.warning("%s: cell %d was stopped after %d s.", submission(self.resources), kwargs["cell_index"] + 1,
                             self.timeout)

    # ----------------------------------------------------------------------------------- the notebook
    def preprocess(self, nb, resources=None, km=None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._records, self._bytes, self._cell_bytes, self._cut = {}, 0, {}, set()
        self._stopped = None  # (why, cell number) once the kernel cannot go on
        self._test_cells = {i for i, c in enumerate(self.nb.cells) if utils.is_grade(c) and not utils.is_solution(c)}
        verdicts = []
        deadline = time.monotonic() + self.notebook_timeout
        with self.setup_kernel():
            info = self.wait_for_reply(self.kc.kernel_info())
            if info:
                self.nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(self.nb.cells):
                if cell.cell_type != "code":
                    continue
                if self._stopped is None and time.monotonic() > deadline:
                    self._stop(f"the notebook ran past its {self.notebook_timeout} s", index)
                if self._stopped is None:
                    self._run(cell, index)
                elif cell.source.strip():
                    cell.outputs = [_error("NotRun", f"this cell did not run: {self._stopped[0]} in cell "
                                                     f"{self._stopped[1] + 1}, so nothing after it could run.")]
                if utils.is_grade(cell) and not utils.is_solution(cell):
                    verdicts += self._score(cell, index)
        resources.setdefault("gradlab", {})
        resources["gradlab"].update({
            "verdicts": verdicts,
            "stopped": None if self._stopped is None else {"why": self._stopped[0], "cell": self._stopped[1] + 1},
            "flags": scan.flags(self.nb, self._source_notebook()),
            "unreadable": _unreadable(self.nb),
            "sandboxed": self.sandboxed,
        })
        records.save(self._course_root(), self.resources.get("nbgrader", {}), resources["gradlab"])
        return self.nb, self.resources

    def _course_root(self):
        from nbgrader.coursedir import CourseDirectory

        return CourseDirectory(config=self.config).root

    def _source_notebook(self):
        from nbgrader.coursedir import CourseDirectory

        info = self.resources.get("nbgrader", {})
        if info.get("source_notebook"):
            return info["source_notebook"]
        if not (info.get("assignment") and info.get("notebook")):
            return None
        coursedir = CourseDirectory(config=self.config)
        return Path(coursedir.format_path(coursedir.source_directory, ".", info["assignment"])) / f"{info['notebook']}.ipynb"

    def _run(self, cell, index):
        try:
            self.preprocess_cell(cell, self.resources, index)
        except DeadKernelError:
            cell.outputs.append(_error("KernelDied", "the kernel stopped while this cell ran: it was ended by the "
                                                     "code (os._exit, a crash) or ran out of memory."))
            self._stop("the kernel stopped", index)
        except CellTimeoutError:
            cell.outputs.append(_error("CellTimeoutError", f"the grader stopped this cell after {self.timeout} s, and the "
                                                           "code did not stop when interrupted, so the kernel was ended."))
            self._stop("the kernel was ended", index)
            run_sync(self.km.shutdown_kernel)(now=True)

    def _stop(self, why, index):
        self._stopped = (why, index)
        self.log.warning("%s: %s in cell %d; the later cells do not run.", submission(self.resources), why, index + 1)

    # ----------------------------------------------------------------------------------- output as it arrives
    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        data = content.get("data", {}) if isinstance(content, dict) else {}
        if msg.get("msg_type") == "display_data" and trial.MIME in data:
            # Only a test cell's checks send records; one from any other cell is the student's and goes unread.
            if cell_index in self._test_cells:
                self._keep_record(cell_index, data[trial.MIME])
            return None
        size = len(json.dumps(content, default=str))
        self._bytes += size
        self._cell_bytes[cell_index] = self._cell_bytes.get(cell_index, 0) + size
        if self._cell_bytes[cell_index] > self.cell_output_limit or self._bytes > self.notebook_output_limit:
            if cell_index not in self._cut:
                self._cut.add(cell_index)
                outs.append(new_output("stream", name="stdout", text=(
                    f"\n[the grader cut this cell's output here: more than {self.cell_output_limit} bytes in the cell, "
                    f"or {self.notebook_output_limit} in the notebook]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _keep_record(self, cell_index, text):
        kept = self._records.setdefault(cell_index, [])
        if len(kept) >= self.records_per_cell:
            if not any(isinstance(r, wire.Malformed) and r.args[0] == TOO_MANY for r in kept):
                kept.append(wire.Malformed(TOO_MANY))
            return
        if not isinstance(text, str) or len(text) > self.record_limit:
            kept.append(wire.Malformed("a record over the size limit"))
            return
        try:
            kept.append(trial.parse(text))
        except wire.Malformed as err:
            kept.append(err)
        except RecursionError:
            kept.append(wire.Malformed("a record nested too deeply to read"))

    # ----------------------------------------------------------------------------------- scoring a test cell
    def _score(self, cell, index):
        try:
            calls = check_calls(cell.source)
        except NotACheck as err:
            self.log.error("%s: test cell %s: %s", submission(self.resources), _grade_id(cell), err)
            calls = []
        if not calls:
            if self.plain_test_cells == "fail":
                cell.outputs = _student_outputs(cell.outputs) + [_error(VERDICT_NAME, "this test cell has no check the grader can run.")]
            else:
                self.log.warning("%s: test cell %s has no gradlab check: its score comes from the kernel's output.",
                                 submission(self.resources), _grade_id(cell))
            return []
        stopped_at = _kernel_errors(cell)
        timed_out = any(o.get("ename") == "CellTimeoutError" for o in stopped_at)
        if stopped_at and not timed_out and self._stopped is None:
            self._run_checks_alone(calls, index)
        records = [r for r in self._records.pop(index, [])]
        # The checks alone decide: a visible test that fails only through a helper (a composite's cell) costs
        # nothing here, as the checks grade the composite with the grader's own helpers.
        verdicts = [self._judge(call, records, cell) for call in calls]
        failed = next((v for v in verdicts if not v.ok), None)
        outputs = _student_outputs(cell.outputs)
        if failed is None:
            lines = [f"✓ the hidden check of {v.check.rpartition('.check_')[2]} is right on every case the grader tried."
                     for v in verdicts]
            lines += [note for v in verdicts for note in v.notes]
            outputs.append(new_output("stream", name="stdout", text="\n".join(lines) + "\n"))
        else:
            if failed.figure:
                outputs.append(new_output("display_data", data={"image/svg+xml": failed.figure,
                                                                "text/plain": "(a picture of the mistake)"}))
            outputs.append(_error(VERDICT_NAME, failed.message))
        cell.outputs = outputs
        grade_id = _grade_id(cell)
        return [{"cell": grade_id, **v.as_dict()} for v in verdicts]

    def _run_checks_alone(self, calls, index):
        """The cell stopped at an error: run its checks on their own, so the verdict names the mistake (the
        kernel's own error says less). A record that came before the error may be the check's (a composite's
        hidden check runs before the visible part) or one the student's code sent before stopping the cell on
        purpose: they cannot be told apart, so they are dropped, and the records of this run are the cell's."""
        names = {call.name for call in calls}
        self._records[index] = [r for r in self._records.get(index, [])
                                if not (isinstance(r, dict) and r.get("check") in names)]
        lines = [f'__import__("gradlab.grading.{call.module}", fromlist=["_"]).{call.function}('
                 + ", ".join([value if kind == "function" else repr(value) for kind, value in call.args]
                             + [f"{k}={v!r}" for k, v in call.kwargs.items()]) + ")" for call in calls]
        original = self.nb.cells[index]
        alone = new_code_cell("\n".join(lines))
        try:
            self.execute_cell(alone, index, store_history=False)
        except (DeadKernelError, CellTimeoutError):
            self._stop("the kernel stopped while the checks ran on their own", index)
        finally:
            self.nb.cells[index] = original

    def _judge(self, call, records, cell):
        mine = [r for r in records if isinstance(r, dict) and r.get("check") == call.name]
        if len(mine) > 1 or any(isinstance(r, wire.Malformed) and r.args[0] == TOO_MANY for r in records):
            self.log.warning("%s: test cell %s sent %d records of %s, where the check sends one.",
                             submission(self.resources), _grade_id(cell), len(mine), call.name)
            return trial.Verdict(call.name, False, (
                f"{call.name} could not be graded: this cell sent more records of its checks than the checks send "
                f"({len(mine)} of {call.name}), so something in the submission published records of its own, and "
                "the grader trusts none of them. Your instructor sees this."), "forged record")
        payload = mine[0] if mine else None
        if payload is not None:
            records.remove(payload)
        else:
            bad = next((r for r in records if isinstance(r, Exception)), None)
            errors = _kernel_errors(cell)
            detail = {"malformed": str(bad) if bad else None,
                      "error": {"ename": errors[0].get("ename"), "evalue": errors[0].get("evalue", "")[:2000]}
                      if errors else None,
                      "stopped": None if self._stopped is None else {"why": self._stopped[0], "cell": self._stopped[1] + 1}}
            return trial.Verdict(call.name, False, _missing(call, cell, bad, self._stopped), "did not run",
                                 detail=detail)
        try:
            check = call.resolve()
        except (ImportError, LookupError) as err:
            self.log.error("%s: %s", submission(self.resources), err)
            return trial.Verdict(call.name, False, "the grader could not find this check; your instructor has been told.",
                                 "grader error", problem=str(err))
        args = [None if kind == "function" else value for kind, value in call.args]
        verdict = trial.replay(check, payload, args, call.kwargs)
        if verdict.problem:
            self.log.error("%s: replaying %s failed in the grader: %s", submission(self.resources), call.name, verdict.problem)
        return verdict


def _unreadable(nb):
    """Why the submitted file could not be read, when autograde graded a stand-in (gradlab.instructor.repair)."""
    note = next((c for c in nb.cells if c.get("id") == UNREADABLE_NOTE_ID), None)
    return None if note is None else note.source


def _kernel_errors(cell):
    return [o for o in cell.outputs if o.output_type == "error" and o.get("ename") != VERDICT_NAME]


TOO_MANY = "more records than a test cell's checks send"


def _missing(call, cell, bad, stopped):
    """Why a check sent no record, in words for the student."""
    if bad is not None:
        return f"{call.name} could not be graded: what the kernel sent for it cannot be read ({bad})."
    errors = _kernel_errors(cell)
    errors.sort(key=lambda o: o.get("ename") != "CellTimeoutError")  # the timeout says more than its interrupt
    if errors:
        first = errors[0]
        return (f"the hidden checks did not run, because the cell stopped at an error first: "
                f"{first.get('ename')}: {first.get('evalue', '')}"[:2000])
    if stopped is not None:
        return f"the hidden checks did not run: {stopped[0]} in cell {stopped[1] + 1}."
    return ("the hidden checks did not report back to the grader. Does your code replace or silence something the "
            "checks use (print, display, IPython's hooks)?")


def _student_outputs(outputs):
    """What the student's code showed in a test cell, kept for reading but unable to affect the score:
    stderr becomes stdout, errors and results become plain text (the grader's verdict is the last output)."""
    kept = []
    for out in outputs:
        if out.output_type == "stream":
            kept.append(new_output("stream", name="stdout", text=out.get("text", "")))
        elif out.output_type == "error":
            kept.append(new_output("stream", name="stdout", text=f"{out.get('ename')}: {out.get('evalue', '')}\n"))
        elif out.output_type == "execute_result":
            kept.append(new_output("display_data", data=out.get("data", {}), metadata=out.get("metadata", {})))
        else:
            kept.append(out)
    return kept


def _error(ename, evalue):
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _grade_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id", "?")
