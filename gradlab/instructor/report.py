"""What did the class get wrong? One assignment's mistakes, per test cell and per gradient, for the instructor.

    cd grader && ../.venv/bin/python -m gradlab.instructor.report 03-backprop-by-hand   # -> reports/03-backprop-by-hand.html
    make class-report LESSON=03-backprop-by-hand                                         # the same, from the repository root

It reads what autograde left in the course folder, and nothing else: the gradebook (the roster, each test
cell's points) and the records (records/<assignment>/<student>/<notebook>.json, written by the trusted grader:
every check's verdict with its diagnosis kind, every comparison, why a kernel stopped, the static scan's flags).
It runs no student code, loads nothing from the network, and the page it writes is one self-contained file
(charts embedded as PNG): nothing leaves the instructor's machine. The page names students: keep it private.

The same tables, as pandas DataFrames, for an instructor's own notebook (``root`` is the course folder, grader/;
each function also takes the result of ``load(root, assignment)`` in place of ``root, assignment``):

    scores(root, assignment)          one row per student: status, points per test cell, total, max
    results(root, assignment)         one row per student, test cell and gradient: right / wrong / not reached /
                                      not graded, with the diagnosis of a wrong one
    mistakes(root, assignment)        the wrong rows of results(): kind, mistake, advice, source, message
    gradients(root, assignment)       one row per test cell and gradient: graded, right, wrong, not reached, share right
    mistake_counts(root, assignment)  one row per test cell, gradient and mistake: count, share, students, advice line
    ungraded(root, assignment)        students who handed in nothing or could not be graded (fully or in part), and why
    flags(root, assignment)           the static scan's flags, and whether the lesson's own solution raises them too
    advice(kind, message="")          (mistake, what they did, advice) for one diagnosis
    write(root, assignment, out=None) writes the HTML page; returns its path

Where a diagnosis comes from (the ``source`` column): "grader" is the hidden check as the trusted grader replayed
it. "visible test" is a cell whose visible test failed in the student's kernel before the hidden check could run:
the kind is then read from that error's message (gradlab.check's wording), which the student's kernel produced.
"""
import argparse
import base64
import datetime
import html
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import records, scan

WHOLE = "(the exercise)"  # the row of a test cell whose checks compare no named gradient
RIGHT, WRONG, NOT_REACHED, NOT_GRADED = "right", "wrong", "not reached", "not graded"

# --------------------------------------------------------------------------------------------------- advice
# One line of teaching advice per mistake: (what the students did, what to do about it in the next lecture).
# Keys are the kind labels of the course's checks (gradlab/check.py, gradlab/variants.py KINDS,
# gradlab/grading/common.py, the lessons' own), a few refinements of them ("factor: missing 1/N"), and the
# reasons a hidden check did not run. tests/test_class_report.py checks that every kind the course uses is here.
ADVICE = {
    # gradlab.check / gradlab.diagnose: what two tensors alone show
    "none": ("returned None", "remind them that the function must end in a return of the result, in place of the "
                              "stub's raise"),
    "type": ("returned something that is not a tensor", "show how a result stays a tensor: no float(), .item(), lists "
                                                       "or NumPy around it"),
    "shape": ("returned the wrong shape", "write the shapes next to the formula on the board: (N,) against (N, 1), and "
                                          "what broadcasting makes of them"),
    "transposed": ("returned the transpose", "write every matrix product with its shapes: a gradient has the shape of "
                                             "what it differentiates"),
    "nan": ("produced NaN or inf", "show where NaN and inf come from: log of 0, exp of a large number, 0/0"),
    "zeros": ("returned all zeros", "check together that the upstream gradient is multiplied in and that a fresh "
                                    "zeros tensor is actually filled"),
    "sign": ("had the sign wrong", "rederive the error term on the board: the derivative of (ŷ − y)² with respect "
                                   "to ŷ is 2(ŷ − y), and the order of the subtraction matters"),
    "factor": ("were off by a constant factor", "go through the constants of the loss one by one: the 2 of the "
                                                "square, the 1/N of the mean, the learning rate"),
    "factor: missing 1/N": ("forgot the 1/N of the mean", "revisit why the mean's derivative carries 1/N: each of "
                                                          "the N terms enters the mean with weight 1/N"),
    "factor: extra 1/N": ("divided by N once too often", "contrast a sum with a mean: the 1/N appears once, where the "
                                                         "mean is taken"),
    "factor: extra 2": ("had an extra factor 2", "show where a 2 comes from (the square) and where it does not: a ½ in "
                                                 "front of the loss cancels it, a term counted twice doubles it"),
    "factor: missing 2": ("dropped the 2 of the square", "recall that the derivative of u² is 2u: the 2 stays in "
                                                         "the gradient"),
    "factor: 2 = N": ("were off by a factor 2, which is also N in that test", "with N = 2 a missing 1/N and an extra 2 "
                                                                            "look alike: revisit the 1/N of the mean "
                                                                            "and the 2 of the square"),
    "factor: ½ = 1/N": ("were off by a factor ½, which is also 1/N in that test", "with N = 2 an extra 1/N and a "
                                                                                 "dropped 2 look alike: revisit the "
                                                                                 "1/N of the mean and the 2 of the "
                                                                                 "square"),
    "close": ("were close but outside the tolerance", "look for a float32 step, an added ε or a small term left out: "
                                                      "rounding alone does not do this"),
    "values": ("had wrong values with no simpler pattern", "work through the chain rule one factor at a time with "
                                                           "them; their feedback shows expected against got"),
    "placement": ("had the right values on the wrong device or dtype", "build new tensors from the inputs "
                                                                       "(torch.ones_like(x)), not with float(), .item(), "
                                                                       ".cpu() or NumPy"),
    # gradlab.variants.KINDS: the formula-level mistakes
    "wrong_point": ("evaluated a local derivative at the wrong place", "say aloud what each factor is applied to: σ' "
                                                                       "at the pre-activation, written with the output"),
    "dropped": ("left a local derivative out", "write the chain as a product of every local derivative before coding "
                                               "it, and tick each factor off"),
    "twice": ("applied a local derivative twice", "trace which factors are already inside the upstream gradient: each "
                                                  "local derivative enters once"),
    "no_upstream": ("forgot to multiply by the upstream gradient", "repeat backprop's one rule: local derivative × "
                                                                   "upstream gradient, at every node"),
    "sigmoid_part": ("used σ or 1 − σ in place of σ(1 − σ)", "derive σ' once on the board: both factors are needed"),
    "relu_slope": ("took ReLU's slope as x instead of 1", "draw ReLU: its slope is 0 or 1, never the input"),
    "mask_upstream": ("took the ReLU mask from the upstream gradient", "the mask comes from the ReLU's forward input, "
                                                                       "not from the gradient flowing back"),
    "mask_missing": ("left out the ReLU mask", "draw a ReLU node: the gradient passes only where its input was "
                                               "positive"),
    "mask_inverted": ("inverted the ReLU mask", "the gradient passes where the input was positive and stops where it "
                                                "was not; test it on a three-element example"),
    "mask_at_zero": ("used x >= 0 for the ReLU mask", "settle the convention at 0 (torch.relu's slope there is 0) "
                                                     "and why a test with exact zeros notices it"),
    "other_activation": ("used another activation's derivative", "put the activations and their derivatives side by "
                                                                 "side: each layer uses its own"),
    "softmax_axis": ("took the softmax over the wrong axis", "say which axis holds the classes: softmax normalises "
                                                             "over the classes of one example"),
    "softmax_diag": ("used only the diagonal of the softmax Jacobian", "softmax couples its outputs: work the full "
                                                                       "Jacobian for three classes"),
    "onehot_added": ("added the one-hot labels instead of subtracting them", "derive softmax with cross-entropy once: "
                                                                             "probabilities minus one-hot"),
    "onehot_missing": ("left the one-hot term out", "derive softmax with cross-entropy once: the label's column gets "
                                                    "its own term"),
    "last_term": ("kept only the last term of a sum (= for +=)", "a gradient that flows along several paths is the "
                                                                 "sum over them: show accumulation over a batch"),
    "wrong_factor": ("used a local factor that belongs elsewhere", "label every factor with where it comes from: "
                                                                   "∂z/∂w is x, ∂z/∂x is w"),
    "stale_input": ("used the first observation's input for every term", "index the current observation inside the "
                                                                         "loop"),
    "error_term": ("used the prediction where the error belongs", "the loss's derivative is about prediction minus "
                                                                  "target, not the prediction alone"),
    "loss_for_grad": ("used the loss where its derivative belongs", "separate a loss's value from its derivative on "
                                                                    "the board"),
    "reg_coeff": ("gave the regularisation gradient the wrong coefficient", "differentiate λ‖W‖² together: the λ and "
                                                                            "the 2"),
    "penalty_value": ("added the penalty's value instead of its gradient", "it is the penalty's gradient that joins "
                                                                           "the loss's gradient"),
    # gradlab.grading.common: how a call of student code can fail
    "autograd": ("used autograd where the gradient was to be derived by hand", "say again why this exercise is by "
                                                                               "hand; the scan's flags below show where"),
    "library": ("called torch's own function where the exercise asks to write it", "point at the docstring's "
                "formula: the exercise is writing it from elementary operations"),
    "numerical": ("estimated the gradient numerically (finite differences) instead of deriving it",
                  "show where a finite difference loses its digits: near a minimum the slope is tiny next to the loss"),
    "changed input": ("changed an input in place", "show `a -= b` against `a = a - b` on a tensor the caller still "
                                                   "needs"),
    "exception": ("wrote code that raised an error", "their feedback shows the error: a few minutes on reading "
                                                     "tracebacks helps"),
    "timeout": ("wrote code that never finished (an endless or very slow loop)", "look at loop conditions together; "
                                                                                 "tensor operations avoid most loops"),
    "not written": ("did not write it", "find out whether they ran out of time or got stuck before this exercise"),
    "not a function": ("replaced the function by something else", "a name assigned again in a later cell is no "
                                                                  "longer the function"),
    # why a hidden check did not run, or could not be judged (gradlab.instructor.execute, gradlab.grading.trial)
    "did not run": ("had the cell stop before the hidden check ran", "their feedback shows the error that stopped it"),
    "not defined": ("had the function missing (renamed, or its cell never ran)", "remind them to keep the names the "
                                                                                 "exercise gives and to run the whole "
                                                                                 "notebook before handing in"),
    "visible test": ("failed the cell's visible test (a plain assert)", "their feedback shows which assertion"),
    "forged record": ("had a cell send records its checks did not send", "read their code: something published "
                      "records of its own"),
    "no report": ("had hidden checks that never reported back", "read their code: something replaced or silenced "
                                                                "what the checks use"),
    "incomplete": ("had a check that could not finish", "read their notebook: a cell that stopped early, or code "
                                                        "that changes the checks"),
    "malformed": ("sent the grader something it cannot read", "read their code: this is what tampering with the "
                                                              "checks looks like"),
    "grader error": ("could not be graded: the grader itself failed", "report it to the course's maintainers and "
                                                                      "grade these cells by hand"),
    # shared by several lessons' checks
    "not a pair": ("returned something other than the pair asked for", "show returning and unpacking a tuple"),
    "not a tuple": ("returned something other than the tuple asked for", "show returning and unpacking a tuple"),
    "not a triple": ("returned something other than the three values asked for", "show returning and unpacking a "
                                                                                 "tuple of three"),
    "not a number": ("returned something other than one number", "a 0-dim tensor or a float, not a tensor of shape "
                                                                 "(N,)"),
    "not a dict": ("returned something other than the dict asked for", "show the dict the exercise asks for, key by "
                                                                       "key"),
    "not an int": ("returned something other than a whole number", "a count is an int, not a float or a tensor"),
    "missing key": ("left out an entry of the dict asked for", "list the keys the exercise asks for, one per layer"),
    "recognised slip": ("made a slip the check recognises", "the message names the slip: show the right and the "
                                                            "wrong version side by side"),
    "known slip": ("made a slip the check recognises", "the message names the slip: show the right and the wrong "
                                                       "version side by side"),
    # lesson 1
    "broadcasting trap": ("fell into the broadcasting trap: (N, 1) − (N,) is (N, N)", "print shapes after every step; "
                                                                                     "reshape or keepdim=True"),
    # lesson 2
    "uphill": ("stepped uphill (+ instead of −)", "draw one step on the cost curve: descent subtracts the gradient"),
    "no learning rate": ("left the learning rate out of the step", "the learning rate scales the gradient in every "
                                                                   "step"),
    "stale gradient": ("computed one gradient at the updated point", "compute every gradient at the old point first, "
                                                                     "then update all parameters"),
    "costs": ("recorded the costs wrongly", "one cost per step, the start included, as the exercise asks"),
    "fit result": ("returned something other than (w, b, costs)", "show what the function must return"),
    "kept going": ("kept going past the stopping condition", "test the condition before each step, the first one "
                                                             "included"),
    "above threshold": ("stopped above the threshold", "the loop stops when the cost is under the threshold, or "
                                                       "after the maximum number of steps"),
    "too many steps": ("needed too many steps (a learning rate too small)", "revisit how large a learning rate is "
                                                                            "still safe"),
    # lesson 3
    "cache": ("built the cache wrongly", "backward needs every intermediate: (x, y, z, s)"),
    "diverged": ("had training diverge (inf or NaN)", "look at the step size and the sign of the update"),
    "training": ("wrote a training loop that ends in the wrong place", "run their loop and autograd's side by side "
                                                                       "for two steps"),
    "stale x": ("used the first observation's x in every step", "index the current observation inside the loop"),
    "one pass": ("made only one pass over the data", "repeat the pass `passes` times"),
    "full batch": ("did full-batch descent instead of one step per observation", "contrast per-observation steps "
                                                                                 "with lesson 2's full batch"),
    # lesson 4
    "missing node": ("left nodes of the graph out", "walk the graph from the loss down, one node at a time"),
    "weights only": ("counted the weights only", "each layer also has one bias per output neuron"),
    "one bias per layer": ("gave each layer a single bias", "a layer has one bias per output neuron"),
    "bias per input": ("counted one bias per input", "a layer has one bias per output neuron, not per input"),
    "bias both sides": ("added biases on both sides of every layer", "a layer has n_in · n_out weights and n_out "
                                                                     "biases"),
    "neurons": ("counted neurons, not parameters", "parameters are the weights and biases between the layers"),
    "count": ("counted wrongly", "n_in · n_out weights plus n_out biases, for every pair of neighbouring layers"),
    # lesson 6
    "percentage": ("returned a percentage, not a fraction", "accuracy is between 0 and 1"),
    "error rate": ("returned the error rate (1 − accuracy)", "count the rows where the prediction equals the label"),
    "overflow": ("let the softmax overflow", "subtract each row's own maximum before exponentiating"),
    "zero_grad": ("let gradients add up from batch to batch", "backward() adds to .grad: zero it before every "
                                                              "backward"),
    "no step": ("never changed the weights", "the order zero_grad, backward, step, once per batch"),
    "one step per epoch": ("took one step per epoch, not per mini-batch", "backward and step belong inside the "
                                                                          "batch loop"),
    "labels misaligned": ("paired images with the wrong labels", "slice X and y with the same shuffled indices"),
    "not shuffled": ("did not shuffle each epoch", "a fresh permutation every epoch, from the generator given"),
    "rows": ("did not use every row exactly once per epoch", "take the batches as slices of one permutation"),
    "batches": ("used the wrong batch sizes", "batches of at most batch_size rows; the last one may be smaller"),
    "epoch loss": ("averaged the epoch's loss wrongly", "weigh each batch's loss by its size"),
    "weights": ("ended the epoch with the wrong weights", "one SGD step per batch, in order"),
    "accuracy": ("trained a network that stays below the target accuracy", "check that every batch takes a step "
                                                                           "and the loss goes down"),
    "too slow": ("trained too slowly", "vectorise over the batch: no Python loop over rows"),
    # lesson 7
    "forward wrong": ("had backward unchecked because forward is wrong", "fix forward first: its own cell says what "
                                                                         "is wrong"),
    "not in place": ("replaced parameters instead of updating them in place", "show in-place updates (add_, -=) on "
                                                                              "shared tensors"),
    "bad parameters": ("changed a parameter's shape or dtype while training", "training changes values only"),
}

_FACTOR = (("forget to divide by N", "factor: missing 1/N"), ("extra division by N", "factor: extra 1/N"),
           ("an extra factor 2", "factor: extra 2"), ("a missing factor 2", "factor: missing 2"))
_SLIPS = ("recognised slip", "known slip")
# Kinds that say the student's function as a whole failed (gradlab.grading.common.call_student and a cell that
# stopped first): every gradient of the cell is wrong, whatever the comparisons before the failure showed.
_WHOLE_FUNCTION = {"autograd", "changed input", "exception", "timeout", "not written", "not a function", "not defined",
                   "visible test", "did not run", "no report", "incomplete", "malformed"}


def advice(kind, message=""):
    """(mistake, what they did, advice) for a diagnosis: the kind refined by the message where the kind alone is
    vague (a constant factor that is N; a slip the check names), and a plain fallback for a kind with no advice."""
    mistake = _mistake(kind, message)
    if mistake in ADVICE:
        what, text = ADVICE[mistake]
    elif kind in ADVICE:
        what, text = ADVICE[kind]
    else:
        what, text = (f"made a mistake the grader labels “{kind}”", "read a few of their feedback pages: there is no "
                                                                   "advice for this label yet")
    if kind in _SLIPS and mistake != kind:
        what = f"made a slip the check recognises ({mistake.split(': ', 1)[1]})"
    return mistake, what, text


def _mistake(kind, message):
    if kind == "factor":
        mistake = next((key for phrase, key in _FACTOR if phrase in (message or "")), kind)
        if mistake in ("factor: extra 2", "factor: missing 2") and _batch_size(message) == 2:
            return "factor: 2 = N" if mistake == "factor: extra 2" else "factor: ½ = 1/N"
        return mistake
    if kind in _SLIPS:
        found = re.match(r"^.*? is wrong \([^)]*\): (.+?)\.?$", (message or "").split("\n", 1)[0])
        if found:
            return f"{kind}: {found.group(1)}"
    return kind or "values"


def _batch_size(message):
    """N of the case a message is about: "n=7" or "N = 3" in it, else the length of the first list in its case
    ("(s = [0.5, 0.9], y = [1, 0])" is N = 2), else None."""
    first = (message or "").split("\n", 1)[0]
    said = re.search(r"\b[nN] ?= ?(\d+)\b", first)
    if said:
        return int(said.group(1))
    case = re.search(r"\(([^()]*\[[^()]*)\):", first)
    items = re.search(r"\[([^\]]*)\]", case.group(1)) if case else None
    return len(items.group(1).split(",")) if items else None


def advice_line(share, kind, message=""):
    """"22 % forgot the 1/N of the mean: revisit why the mean's derivative carries 1/N"."""
    _, what, text = advice(kind, message)
    return f"{_percent(share)} {what}: {text}"


def _percent(share):
    return f"{100 * share:.0f} %"


# --------------------------------------------------------------------------------------------------- reading
@dataclass
class ClassData:
    """Everything the report reads, once: see ``load``."""

    root: Path
    assignment: str
    cells: list  # [(notebook, grade_id, max points)] in the notebooks' order
    roster: list  # every student of the gradebook
    points: dict  # {student: {grade_id: points or None (needs manual grading)}}, students with a graded submission
    submitted: set  # students with a folder in submitted/<student>/<assignment>
    records: dict  # {student: {notebook: record}}
    unreadable: dict  # {student: {notebook: why}}: a file autograde graded as an empty notebook
    solution_flags: set  # {(grade_id, category, what)} that the lesson's own solution raises too
    _results: list = field(default=None, repr=False)


def load(root, assignment):
    """Read the gradebook, the records and the autograded notebooks of one assignment in the course folder ``root``
    (FileNotFoundError without a gradebook, LookupError for an assignment it does not have)."""
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.coursedir import CourseDirectory

    from .parallel import _alembic_on_path, course_config

    _alembic_on_path()
    coursedir = CourseDirectory(config=course_config(root))
    course_root = Path(coursedir.root)
    if coursedir.db_url.startswith("sqlite:///") and not Path(coursedir.db_url.removeprefix("sqlite:///")).exists():
        raise FileNotFoundError(f"no gradebook at {coursedir.db_url.removeprefix('sqlite:///')}: run this in the course "
                                "folder (grader/) after autograding.")
    cells, points = [], {}
    with Gradebook(coursedir.db_url) as gradebook:
        try:
            found = gradebook.find_assignment(assignment)
        except MissingEntry:
            raise LookupError(f"{assignment} is not in the gradebook: release it first (nbgrader generate_assignment)."
                              ) from None
        for notebook in found.notebooks:
            order = [c.name for c in notebook.source_cells]
            cells += sorted(((notebook.name, c.name, c.max_score) for c in notebook.grade_cells),
                            key=lambda c: order.index(c[1]) if c[1] in order else len(order))
        roster = sorted(s.id for s in gradebook.students)
        for submission in gradebook.assignment_submissions(assignment):
            points[submission.student.id] = {grade.name: None if grade.needs_manual_grade else grade.score
                                             for nb in submission.notebooks for grade in nb.grades}
    submitted = {p.parent.name for p in course_root.glob(f"submitted/*/{assignment}") if p.is_dir()}
    _, source = _folders(root, assignment)
    return ClassData(course_root, assignment, cells, roster, points, submitted,
                     records.load_all(course_root, assignment), _unreadable(course_root, assignment),
                     _solution_flags(source, {nb for nb, _, _ in cells}))


def _folders(root, assignment):
    """(the course folder, the assignment's source folder), as nbgrader finds them from ``root``'s config."""
    from nbgrader.coursedir import CourseDirectory

    from .parallel import course_config

    coursedir = CourseDirectory(config=course_config(root))
    return Path(coursedir.root), Path(coursedir.format_path(coursedir.source_directory, ".", assignment))


def _unreadable(root, assignment):
    """{student: {notebook: why}} for the submissions autograde replaced by an explained empty notebook."""
    from .repair import UNREADABLE_NOTE_ID

    found = {}
    for path in sorted(Path(root).glob(f"autograded/*/{assignment}/*.ipynb")):
        try:
            cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        except (OSError, ValueError):
            continue
        for cell in cells:
            if cell.get("id") == UNREADABLE_NOTE_ID:
                text = "".join(cell.get("source", ""))
                why = re.search(r"that was collected is (.+?)\.\n", text)
                found.setdefault(path.parent.parent.name, {})[path.stem] = why.group(1) if why else "not readable"
    return found


def _solution_flags(source, notebooks):
    import nbformat

    seen = set()
    for name in notebooks:
        path = source / f"{name}.ipynb"
        if path.exists():
            for f in scan.flags(nbformat.read(path, as_version=4)):
                seen.add((f["grade_id"], f["category"], f["what"]))
    return seen


def _data(root, assignment):
    if isinstance(root, ClassData):
        return root
    if assignment is None:
        raise TypeError("give the course folder and the assignment, or the result of load()")
    return load(root, assignment)


# --------------------------------------------------------------------------------------------------- judging
@dataclass
class _Failure:
    kind: str
    gradient: str | None
    source: str  # "grader" or "visible test"
    message: str
    graded: bool = True  # False: the grader could not judge (the kernel stopped, a grader error)


def _failure(verdict):
    """What went wrong in one failed check, with the kind of a visible test's failure read from its message."""
    message = verdict.get("message") or ""
    kind = verdict.get("kind")
    if verdict.get("problem") or kind == "grader error":
        return _Failure("grader error", None, "grader", verdict.get("problem") or message, graded=False)
    if kind != "did not run":
        return _Failure(kind or "values", verdict.get("gradient"), "grader", message)
    stopped = re.match(r"the hidden checks did not run: (.+) in cell (\d+)\.", message)
    if stopped:
        return _Failure("did not run", None, "grader", f"{stopped.group(1)} in cell {stopped.group(2)}", graded=False)
    if "cannot be read" in message:
        return _Failure("malformed", None, "grader", message)
    if "did not report back" in message:
        return _Failure("no report", None, "grader", message)
    error = re.search(r"stopped at an error first: (\w+): ?(.*)", message, re.S)
    if not error:
        return _Failure("did not run", None, "grader", message)
    ename, evalue = error.group(1), error.group(2)
    if ename in ("NotRun", "KernelDied"):  # gradlab.instructor.execute: the kernel stopped in this cell or before
        why = re.search(r"(the kernel .+? in cell \d+)", evalue)
        return _Failure("did not run", None, "grader", why.group(1) if why else _first_line(evalue), graded=False)
    if ename == "GradientError":
        gradient, kind = visible_diagnosis(evalue)
        return _Failure(kind, gradient, "visible test", evalue)
    kind = {"NotImplementedError": "not written", "CellTimeoutError": "timeout", "NameError": "not defined",
            "AssertionError": "visible test"}.get(ename, "exception")
    return _Failure(kind, None, "visible test", f"{ename}: {evalue}")


def visible_diagnosis(text):
    """(gradient, kind) of a GradientError's message from gradlab.check.check_grad in a visible test."""
    from gradlab.diagnose import SIGN

    head = re.match(r"^(.+?) (?:is wrong|could not be checked)(?: \(.*?\))?: (.*)$", text.split("\n", 1)[0])
    if not head:
        return None, "values"
    gradient, sentence = head.group(1), head.group(2)
    rules = [
        ("none", sentence.startswith("got None")),
        ("type", sentence.startswith("got ")),
        ("transposed", "transpose" in sentence),
        ("shape", sentence.startswith("shape ")),
        ("nan", " are NaN" in sentence or " are inf" in sentence),
        ("zeros", sentence.startswith("every value is 0.")),
        ("sign", sentence.startswith(SIGN)),
        ("factor", "× the expected one" in sentence),
        ("close", sentence.startswith("close, but outside the tolerance")),
    ]
    return gradient, next((kind for kind, hit in rules if hit), "values")


def _gradients_of(verdicts):
    """The gradients a cell's checks compared, in order: from every comparison, then the failing one."""
    names = []
    for v in verdicts:
        for o in v.get("outcomes") or []:
            if o.get("gradient") and o["gradient"] not in names:
                names.append(o["gradient"])
    return names


def _judge_cell(verdicts, gradients):
    """{gradient: (status, _Failure or None)} for one student's test cell."""
    failed = next((v for v in verdicts if not v.get("ok")), None)
    if failed is None:
        return {g: (RIGHT, None) for g in gradients}
    failure = _failure(failed)
    outcomes = {}
    for v in verdicts:
        for o in v.get("outcomes") or []:
            outcomes.setdefault(o.get("gradient"), []).append(o.get("status"))
    shown_right = {g for g, statuses in outcomes.items() if all(s in ("exact", "close") for s in statuses)}
    judged = {}
    for g in gradients:
        if not failure.graded:
            judged[g] = (NOT_GRADED, failure)
        elif failure.gradient == g or g == WHOLE:
            judged[g] = (WRONG, failure)
        elif failure.gradient is not None:
            judged[g] = (RIGHT, None) if g in shown_right else (NOT_REACHED, None)
        elif failure.kind in _WHOLE_FUNCTION or g not in shown_right:
            judged[g] = (WRONG, failure)
        else:
            judged[g] = (RIGHT, None)
    return judged


def _students(data):
    return sorted(set(data.roster) | data.submitted | set(data.points) | set(data.records))


def _results(data):
    if data._results is not None:
        return data._results
    by_cell = {}  # grade_id -> {student: [verdicts]}
    for student, notebooks in data.records.items():
        if student in data.unreadable:
            continue
        for record in notebooks.values():
            for v in record.get("verdicts") or []:
                by_cell.setdefault(v.get("cell"), {}).setdefault(student, []).append(v)
    rows = []
    for notebook, grade_id, _ in data.cells:
        per_student = by_cell.get(grade_id, {})
        gradients = []
        for verdicts in per_student.values():
            gradients += [g for g in _gradients_of(verdicts) if g not in gradients]
        for verdicts in per_student.values():
            failed = next((v for v in verdicts if not v.get("ok")), None)
            extra = _failure(failed).gradient if failed else None
            if extra and extra not in gradients:
                gradients.append(extra)
        gradients = gradients or [WHOLE]
        for student in sorted(per_student):
            for g, (status, failure) in _judge_cell(per_student[student], gradients).items():
                row = {"student": student, "notebook": notebook, "cell": grade_id, "gradient": g, "status": status,
                       "kind": None, "mistake": None, "what": None, "advice": None, "source": None, "message": None}
                if failure is not None:
                    mistake, what, text = advice(failure.kind, failure.message)
                    row.update(kind=failure.kind, mistake=mistake, what=what, advice=text, source=failure.source,
                               message=_first_line(failure.message))
                rows.append(row)
    data._results = rows
    return rows


def _first_line(text, limit=300):
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------- the tables
def _frame(rows, columns):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def results(root, assignment=None):
    """One row per graded student, test cell and gradient: status right / wrong / not reached / not graded, and
    for a wrong one its kind, mistake, what they did, advice, source and the first line of the message."""
    return _frame(_results(_data(root, assignment)), ["student", "notebook", "cell", "gradient", "status", "kind",
                                                      "mistake", "what", "advice", "source", "message"])


def mistakes(root, assignment=None):
    """The wrong rows of ``results``: who got which gradient wrong, and the diagnosis."""
    frame = results(root, assignment)
    return frame[frame["status"] == WRONG].drop(columns="status").reset_index(drop=True)


def gradients(root, assignment=None):
    """One row per test cell and gradient: students graded on it, right, wrong, not reached, share right."""
    data = _data(root, assignment)
    counts = {}
    for r in _results(data):
        entry = counts.setdefault((r["cell"], r["gradient"]), {RIGHT: 0, WRONG: 0, NOT_REACHED: 0, NOT_GRADED: 0})
        entry[r["status"]] += 1
    rows = []
    for (cell, gradient), c in counts.items():
        graded = c[RIGHT] + c[WRONG] + c[NOT_REACHED]
        rows.append({"cell": cell, "gradient": gradient, "graded": graded, "right": c[RIGHT], "wrong": c[WRONG],
                     "not_reached": c[NOT_REACHED], "not_graded": c[NOT_GRADED],
                     "share_right": c[RIGHT] / graded if graded else float("nan")})
    return _frame(rows, ["cell", "gradient", "graded", "right", "wrong", "not_reached", "not_graded", "share_right"])


def _counts(data):
    graded, groups, position = {}, {}, {}
    for r in _results(data):
        position.setdefault((r["cell"], r["gradient"]), len(position))
        if r["status"] != NOT_GRADED:
            graded[(r["cell"], r["gradient"])] = graded.get((r["cell"], r["gradient"]), 0) + 1
        if r["status"] == WRONG:
            groups.setdefault((r["cell"], r["gradient"], r["mistake"]), []).append(r)
    rows = []
    for (cell, gradient, mistake), members in groups.items():
        share = len(members) / graded[(cell, gradient)]
        first = members[0]
        rows.append({"cell": cell, "gradient": gradient, "mistake": mistake, "kind": first["kind"],
                     "count": len(members), "share": share, "students": sorted(m["student"] for m in members),
                     "sources": sorted({m["source"] for m in members}),
                     "advice": f"{_percent(share)} {first['what']}: {first['advice']}", "members": members})
    rows.sort(key=lambda r: (position[(r["cell"], r["gradient"])], -r["count"], r["mistake"]))
    return rows


def _grouped(data, counts):
    """The counts of a cell merged over its gradients, per mistake: a function that was not written is one line,
    not one per gradient. [{cell, mistake, kind, gradients, students, count, share, message, sources}]"""
    groups = {}
    for c in counts:
        g = groups.setdefault((c["cell"], c["mistake"]), {"cell": c["cell"], "mistake": c["mistake"], "kind": c["kind"],
                                                          "gradients": [], "students": set(), "share": 0.0,
                                                          "message": c["members"][0]["message"] or "",
                                                          "sources": set(), "members": []})
        g["gradients"].append(c["gradient"])
        g["students"] |= set(c["students"])
        g["share"] = max(g["share"], c["share"])
        g["sources"] |= set(c["sources"])
        g["members"] += c["members"]
    out = list(groups.values())
    for g in out:
        g["count"] = len(g["students"])
        g["students"] = sorted(g["students"])
    order = {cell: i for i, (_, cell, _) in enumerate(data.cells)}
    out.sort(key=lambda g: (order.get(g["cell"], len(order)), -g["count"], g["mistake"]))
    return out


def mistake_counts(root, assignment=None):
    """One row per test cell, gradient and mistake: how many students made it, their share of the students graded
    on that gradient, who they are, and the line of advice ("22 % forgot the 1/N of the mean: revisit …")."""
    rows = [{k: v for k, v in r.items() if k != "members"} for r in _counts(_data(root, assignment))]
    return _frame(rows, ["cell", "gradient", "mistake", "kind", "count", "share", "students", "sources", "advice"])


def _status(data, student):
    if student in data.unreadable:
        return "unreadable"
    if student not in data.points:
        return "not graded" if student in data.submitted else "no submission"
    if student not in data.records:
        return "no record"
    return "graded"


def scores(root, assignment=None):
    """One row per student (the roster, and whoever handed something in): status, points per test cell, total, max.
    Status: graded, no submission, not graded (handed in, not in the gradebook), unreadable (graded as an empty
    notebook), no record (in the gradebook but graded without this course's grader: mistakes unknown)."""
    data = _data(root, assignment)
    cells = [grade_id for _, grade_id, _ in data.cells]
    maximum = sum(p for _, _, p in data.cells)
    rows = []
    for student in _students(data):
        got = data.points.get(student)
        row = {"student": student, "status": _status(data, student)}
        for grade_id in cells:
            row[grade_id] = None if got is None else got.get(grade_id)
        values = [row[c] for c in cells]
        row["total"] = None if got is None or None in values else sum(values)
        row["max"] = maximum
        rows.append(row)
    return _frame(rows, ["student", "status", *cells, "total", "max"]).set_index("student")


def _ungraded_rows(data):
    rows = []
    for student in _students(data):
        status = _status(data, student)
        if status == "no submission":
            rows.append({"student": student, "status": status, "cells": "every cell",
                         "detail": "on the gradebook's roster, but nothing was handed in"})
        elif status == "not graded":
            rows.append({"student": student, "status": status, "cells": "every cell",
                         "detail": "handed in but not in the gradebook: autograde failed for this student (see its log) "
                                   "or has not run yet"})
        elif status == "unreadable":
            for notebook, why in sorted(data.unreadable[student].items()):
                rows.append({"student": student, "status": status, "cells": "every cell",
                             "detail": f"{notebook}.ipynb is {why}: graded as an empty notebook"})
        elif status == "no record":
            rows.append({"student": student, "status": status, "cells": "every cell",
                         "detail": "graded, but without this course's grader records: autograde again with --force "
                                   "to see the mistakes"})
    by_student = {}
    for r in _results(data):
        if r["status"] == NOT_GRADED:
            by_student.setdefault((r["student"], r["kind"], r["message"]), []).append(r["cell"])
    for (student, kind, message), cells in sorted(by_student.items()):
        status = "kernel stopped" if kind == "did not run" else "grader error"
        rows.append({"student": student, "status": status, "cells": ", ".join(dict.fromkeys(cells)),
                     "detail": message})
    return rows


def ungraded(root, assignment=None):
    """Students who handed in nothing (on the roster) or could not be graded, fully or in part, and why."""
    return _frame(_ungraded_rows(_data(root, assignment)), ["student", "status", "cells", "detail"])


def flag_rows(root, assignment=None):
    """The static scan's flags as dicts (student, notebook, cell, grade_id, where, category, what, line,
    in_solution); in_solution: the lesson's own solution of that exercise raises the same flag (probably harmless).
    Reads the records and the lesson's source only (not the gradebook)."""
    if isinstance(root, ClassData):
        kept, baseline = root.records, root.solution_flags
    else:
        course_root, source = _folders(root, assignment)
        kept = records.load_all(course_root, assignment)
        baseline = _solution_flags(source, {nb for notebooks in kept.values() for nb in notebooks})
    rows = []
    for student, notebooks in sorted(kept.items()):
        for notebook, record in sorted(notebooks.items()):
            for f in record.get("flags") or []:
                rows.append({"student": student, "notebook": notebook, "cell": f.get("cell"),
                             "grade_id": f.get("grade_id"), "where": f.get("where"), "category": f.get("category"),
                             "what": f.get("what"), "line": f.get("line"),
                             "in_solution": (f.get("grade_id"), f.get("category"), f.get("what")) in baseline})
    return rows


def flags(root, assignment=None):
    """The static scan's flags (autograd or tampering code found in a student's cells), one row each."""
    return _frame(flag_rows(root, assignment), ["student", "notebook", "cell", "grade_id", "where", "category", "what",
                                                "line", "in_solution"])


# --------------------------------------------------------------------------------------------------- charts
_GREEN, _GREY = "#3a8f3a", "#b8b8b8"
_PALETTE = ["#c0392b", "#e67e22", "#8e44ad", "#2c7fb8", "#b5651d", "#d35400", "#7f8c8d", "#16a085"]


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _histogram(data):
    from matplotlib.figure import Figure

    maximum = sum(p for _, _, p in data.cells) or 1
    totals = [sum(v for v in cells.values() if v is not None) for s, cells in data.points.items()
              if s not in data.unreadable]
    if not totals:
        return None
    figure = Figure(figsize=(6.4, 2.6))
    ax = figure.subplots()
    whole = float(maximum).is_integer() and maximum <= 40
    bins = [b - 0.5 for b in range(int(maximum) + 2)] if whole else 10
    ax.hist(totals, bins=bins, range=None if whole else (0, maximum), color="#2c7fb8", edgecolor="white")
    ax.set_xlabel(f"points (out of {maximum:g})")
    ax.set_ylabel("students")
    ax.set_xlim(-0.6, maximum + 0.6)
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"Scores of the {len(totals)} graded submissions", fontsize=10)
    return _png(figure)


def _cell_chart(rows, counts, colours):
    """One group of horizontal bars per gradient of a cell: right, each mistake, not reached (share of the graded)."""
    from matplotlib.figure import Figure

    bars = []  # (gradient, label, share, colour)
    for g in rows:
        graded = g["graded"] or 1
        bars.append((g["gradient"], "right", g["right"] / graded, _GREEN))
        for c in [c for c in counts if c["gradient"] == g["gradient"]]:
            bars.append((g["gradient"], _short(c["mistake"]), c["share"], _colour(colours, c["mistake"])))
        if g["not_reached"]:
            bars.append((g["gradient"], "not reached", g["not_reached"] / graded, _GREY))
    titled = len(rows) > 1 or rows[0]["gradient"] != WHOLE
    figure = Figure(figsize=(7.2, 0.24 * len(bars) + (0.3 * len(rows) if titled else 0) + 0.55))
    ax = figure.subplots()
    positions, labels, groups, y = [], [], [], 0.0
    for i, (gradient, label, share, colour) in enumerate(bars):
        if titled and (i == 0 or bars[i - 1][0] != gradient):
            y += 0.9 if i else 0.3
            groups.append((gradient, y - 0.75))
        positions.append(y)
        labels.append(label)
        ax.barh(y, 100 * share, color=colour, height=0.75)
        ax.text(100 * share + 1, y, _percent(share), va="center", fontsize=8)
        y += 1
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_ylim(y - 0.4, -0.6 if not titled else -0.2)
    ax.set_xlim(0, 112)
    ax.set_xlabel("% of the students graded on this gradient", fontsize=8)
    for gradient, at in groups:
        ax.text(0.01, at, gradient, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=8.5,
                fontweight="bold", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)
    return _png(figure)


def _colour(colours, mistake):
    """One colour per mistake on the whole page."""
    return colours.setdefault(mistake, _PALETTE[len(colours) % len(_PALETTE)])


def _short(mistake, limit=42):
    return mistake if len(mistake) <= limit else mistake[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------- the page
_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem; margin: 1.5rem auto;
       padding: 0 1rem; color: #1d1d1d; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
  border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1.02rem; margin: 1.2rem 0 .3rem; }
.private { background: #fff4e5; border-left: 4px solid #e67e22; padding: .4rem .7rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border-bottom: 1px solid #e4e4e4; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.advice li { margin: .2rem 0; } ul.advice .share { font-weight: 600; }
img.chart { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
details { margin: .4rem 0 1rem; } summary { cursor: pointer; color: #2c5f8a; }
.muted { color: #666; font-size: .9rem; } .ok { color: #2f7d32; } code { font-size: .9em; }
nav ol { columns: 2; } td:first-child { white-space: nowrap; }
"""


def html_page(root, assignment=None):
    """The report as one self-contained HTML page (str)."""
    data = _data(root, assignment)
    e = html.escape
    frame_scores = scores(data)
    graded_table = gradients(data)
    counts = _counts(data)
    groups = _grouped(data, counts)
    colours = {}
    ungraded_rows = _ungraded_rows(data)
    flagged = flag_rows(data)
    statuses = frame_scores["status"].value_counts().to_dict()
    graded_totals = frame_scores[frame_scores["status"] == "graded"]["total"].dropna()
    maximum = sum(p for _, _, p in data.cells)

    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Class report: {e(data.assignment)}"
           f"</title><meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style>"
           "</head><body>",
           f"<h1>What the class got wrong: {e(data.assignment)}</h1>",
           f"<p class='muted'>Made {datetime.datetime.now():%Y-%m-%d %H:%M} from the gradebook and the grader's records "
           f"in <code>{e(str(data.root))}</code>.</p>",
           "<p class='private'><strong>For the instructor only.</strong> This page names students and their mistakes; "
           "it is one file with nothing loaded from the network. Do not share it with the class.</p>"]

    # summary and histogram
    out.append("<h2 id='scores'>Scores</h2><table><tr><th>students</th><th>count</th></tr>")
    labels = {"graded": "graded", "no submission": "handed in nothing", "not graded": "handed in, not graded",
              "unreadable": "unreadable file", "no record": "graded without records"}
    out.append(f"<tr><td>on the roster or handing something in</td><td class='num'>{len(frame_scores)}</td></tr>")
    for key, label in labels.items():
        if statuses.get(key):
            out.append(f"<tr><td>{e(label)}</td><td class='num'>{statuses[key]}</td></tr>")
    out.append("</table>")
    if len(graded_totals):
        out.append(f"<p>Mean {graded_totals.mean():.1f}, median {graded_totals.median():g} of {maximum:g} points "
                   f"({len(graded_totals)} graded submissions; unreadable files and students who handed in nothing "
                   "are not in the chart).</p>")
    histogram = _histogram(data)
    if histogram:
        out.append(f"<img class='chart' id='histogram' alt='Histogram of the scores' "
                   f"src='data:image/png;base64,{histogram}'>")
    else:
        out.append("<p class='muted'>No graded submissions yet: autograde first.</p>")

    # what to revisit, across the assignment
    top = sorted(groups, key=lambda c: (-c["share"], -c["count"]))
    out.append("<h2 id='revisit'>What to revisit</h2>")
    if top:
        out.append("<p class='muted'>The mistakes of the whole assignment, most common first: the share of the "
                   "students graded on that gradient, and how many students.</p><ul class='advice'>")
        for c in top[:15]:
            out.append(f"<li><a href='#cell-{e(c['cell'])}'>{e(c['cell'])}</a>, {_gradients_html(c)}: "
                       f"{_advice_html(c)}</li>")
        out.append("</ul>")
        if len(top) > 15:
            out.append(f"<p class='muted'>… and {len(top) - 15} more, in the exercises below.</p>")
    else:
        out.append("<p class='ok'>No diagnosed mistakes.</p>")

    # contents
    out.append("<nav><h2>Exercises</h2><ol>")
    for _, grade_id, points in data.cells:
        out.append(f"<li><a href='#cell-{e(grade_id)}'>{e(grade_id)}</a> ({points:g} point{'s' if points != 1 else ''})"
                   "</li>")
    out.append("</ol></nav>")

    # per test cell
    for notebook, grade_id, points in data.cells:
        rows = graded_table[graded_table["cell"] == grade_id].to_dict("records")
        cell_counts = [c for c in counts if c["cell"] == grade_id]
        cell_groups = [g for g in groups if g["cell"] == grade_id]
        full = sum(1 for s, cells in data.points.items() if cells.get(grade_id) == points and s not in data.unreadable)
        scored = sum(1 for s, cells in data.points.items() if s not in data.unreadable)
        out.append(f"<section class='cell' id='cell-{e(grade_id)}'><h2>{e(grade_id)} "
                   f"<span class='muted'>({points:g} point{'s' if points != 1 else ''}, {e(notebook)})</span></h2>")
        out.append(f"<p>{full} of {scored} graded submissions scored it ({_percent(full / scored) if scored else '–'})."
                   "</p>")
        if not rows:
            out.append("<p class='muted'>No record of this cell's checks.</p></section>")
            continue
        out.append("<table><tr><th>gradient</th><th>right</th><th>wrong</th><th>not reached</th><th>share right</th>"
                   "</tr>")
        for g in rows:
            share = "–" if g["graded"] == 0 else _percent(g["share_right"])
            out.append(f"<tr><td>{e(g['gradient'])}</td><td class='num'>{g['right']}</td><td class='num'>{g['wrong']}"
                       f"</td><td class='num'>{g['not_reached']}</td><td class='num'>{share}</td></tr>")
        out.append("</table>")
        out.append(f"<img class='chart' alt='Right answers and mistakes per gradient of {e(grade_id)}' "
                   f"src='data:image/png;base64,{_cell_chart(rows, cell_counts, colours)}'>")
        if cell_groups:
            out.append("<ul class='advice'>")
            for c in cell_groups:
                out.append(f"<li>{_gradients_html(c)}: {_advice_html(c)}</li>")
            out.append("</ul><details><summary>The students behind each mistake</summary><table><tr><th>mistake</th>"
                       "<th>student</th><th>gradients</th><th>what the check said</th></tr>")
            for c in cell_groups:
                per_student = {}
                for m in c["members"]:
                    per_student.setdefault(m["student"], []).append(m)
                for student, ms in sorted(per_student.items()):
                    seen = "" if ms[0]["source"] == "grader" else " <span class='muted'>(visible test)</span>"
                    out.append(f"<tr><td>{e(c['mistake'])}</td><td>{e(student)}</td>"
                               f"<td>{e(', '.join(m['gradient'] for m in ms))}</td>"
                               f"<td>{e(ms[0]['message'] or '')}{seen}</td></tr>")
            out.append("</table></details>")
        else:
            out.append("<p class='ok'>No diagnosed mistakes in this cell.</p>")
        out.append("</section>")

    # not handed in, not graded
    out.append("<h2 id='ungraded'>Handed in nothing, or could not be graded</h2>")
    if ungraded_rows:
        out.append("<table><tr><th>student</th><th>status</th><th>cells</th><th>why</th></tr>")
        for r in ungraded_rows:
            out.append(f"<tr><td>{e(r['student'])}</td><td>{e(r['status'])}</td><td>{e(r['cells'])}</td>"
                       f"<td>{e(r['detail'] or '')}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p class='ok'>Every student on the roster handed in, and every submission was graded.</p>")

    # the static scan
    out.append("<h2 id='flags'>Code to read: the static scan's flags</h2><p class='muted'>Autograd or code that "
               "tampers with the grader, found by reading the student's exercise cells and every cell that is not "
               "the lesson's own. A flag takes no points: it is a reason to read the code.</p>")
    out.append(_flags_html(flagged, [f for f in flagged if not f["in_solution"]], e))
    known = [f for f in flagged if f["in_solution"]]
    if known:
        out.append(f"<details><summary>{len(known)} more flags that the lesson's own solution raises too (probably "
                   "harmless)</summary>")
        out.append(_flags_html(known, known, e))
        out.append("</details>")

    out.append("<h2 id='reading'>How to read this page</h2><ul class='muted'>"
               "<li>A gradient is <em>right</em> when the grader's hidden check accepted it, <em>wrong</em> when the "
               "check named it (or the student's function failed as a whole: not written, an error, autograd, a "
               "timeout), and <em>not reached</em> when the check stopped at an earlier gradient.</li>"
               "<li>Shares are of the students graded on that gradient: those who handed in nothing, or whose "
               "notebook could not be graded, are listed above instead.</li>"
               "<li>“(visible test)”: the cell's visible test failed in the student's notebook before the hidden "
               "check ran; the mistake is read from that test's message, which the student's kernel printed.</li>"
               "</ul></body></html>")
    return "\n".join(out)


def _advice_html(c):
    what, text = c["members"][0]["what"], c["members"][0]["advice"]
    students = f"{c['count']} student{'s' if c['count'] != 1 else ''}"
    return (f"<span class='share'>{_percent(c['share'])}</span> {html.escape(what)}: {html.escape(text)} "
            f"<span class='muted'>({students})</span>")


def _gradients_html(c):
    shown = [g for g in c["gradients"] if g != WHOLE]
    return "<strong>" + html.escape(", ".join(shown) if shown else "the exercise") + "</strong>"


def _flags_html(all_rows, rows, e):
    if not rows:
        return "<p class='ok'>No flags.</p>" if not all_rows else "<p class='ok'>None beyond what the solution raises.</p>"
    out = ["<table><tr><th>student</th><th>cell</th><th>where</th><th>found</th></tr>"]
    grouped = {}
    for f in rows:
        grouped.setdefault((f["student"], f["notebook"], f["cell"], f["grade_id"], f["where"]), []).append(f)
    for (student, notebook, cell, grade_id, where), items in grouped.items():
        found = "; ".join(f"{f['category']}: {f['what']} (line {f['line']})" for f in items)
        name = f"cell {cell}" + (f" ({grade_id})" if grade_id else "")
        out.append(f"<tr><td>{e(student)}</td><td>{e(name)}</td><td>{e(where or '')}</td><td>{e(found)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def write(root, assignment=None, out=None):
    """Write the page to ``out`` (default: <course>/reports/<assignment>.html) and return its path."""
    data = _data(root, assignment)
    target = Path(out) if out else data.root / "reports" / f"{data.assignment}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html_page(data), encoding="utf-8")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment")
    parser.add_argument("--root", default=".", help="the nbgrader course folder (default: here)")
    parser.add_argument("--out", help="where to write the page (default: <course>/reports/<assignment>.html)")
    args = parser.parse_args(argv)
    try:
        data = load(args.root, args.assignment)
    except (FileNotFoundError, LookupError) as err:
        raise SystemExit(str(err)) from None
    path = write(data, out=args.out)
    counts = _counts(data)
    print(f"{args.assignment}: {len(_students(data))} students, {sum(c['count'] for c in counts)} diagnosed mistakes "
          f"in {len({(c['cell'], c['gradient']) for c in counts})} gradients.")
    print(f"Class report (for the instructor only: it names students): {path.resolve()}")


if __name__ == "__main__":
    main()
