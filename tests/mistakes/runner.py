"""Run the corpus of real mistakes through a diagnosis and count named / vague / misleading / missed.

    named       the diagnosis names the mistake a teacher would name (the case's kind)
    vague       it says only that the values differ (or something true but unspecific)
    misleading  it names a different specific mistake
    missed      the wrong answer passed

Three diagnoses are measured:
- ``compare``: gradlab.check.compare alone, on the first failing case in the order a hidden check tries
  them (today's first message), first wrong gradient;
- ``mechanism``: gradlab.variants' Exercise.check over all the cases (the first message from the most
  informative failing case, a formula variant where one fits on every case);
- ``hidden``: a lesson's own hidden check (``lessonNN.check_x``) in its plain local mode: the AssertionError's
  ``kind`` label where it has one, else the words of its message.
"""
import re
from collections import Counter

import torch

from gradlab.check import compare

from .cases import CORPUS
from .exercises import all_specs

OUTCOMES = ("named", "vague", "misleading", "missed")
# Kinds that say nothing specific about the formula by themselves; "known slip" and "recognised slip" are the
# lessons' own labels for a sentence from their list of slips: the sentence says which.
GENERIC = {None, "values", "close", "exception", "placement", "known slip", "recognised slip"}
# Words of compare's or a hidden check's message that point at a specific mistake, for a message without a kind
# label, or with a generic one. Each maps to the kinds it names (a family where one hint covers several).
PHRASES = [
    (r"mask such as \(z > 0\) missing", {"mask_missing"}),
    (r"mask such as \(z > 0\) inverted", {"mask_inverted"}),
    (r"mask such as \(z > 0\) at the wrong places", {"mask_upstream", "mask_at_zero", "mask_inverted"}),
    (r"one per row is wrong.*one-hot", {"onehot_missing", "onehot_added", "last_term"}),
    (r"local derivative alone", {"no_upstream"}),
    (r"multiplies dout by σ\(x\)", {"sigmoid_part"}),
    (r"applies σ to the cache again", {"wrong_point"}),
    (r"multiplies dout by ReLU\(x\)", {"relu_slope"}),
    (r"where x is exactly 0|not (where )?x >= 0", {"mask_at_zero"}),
    (r"uses the prediction f where the error", {"error_term"}),
    (r"uses the prediction f\(X\)", {"error_term"}),
    (r"x1 and x2 swapped", {"wrong_factor"}),
    (r"forgets to multiply the error by the input", {"dropped"}),
    (r"wrong sign|y − f\(X\) instead of f\(X\) − y", {"sign"}),
    (r"× the expected one", {"factor"}),
    (r"transpose", {"transposed"}),
    (r"broadcasting trap|shape \(.*\) but expected", {"shape"}),
]


# Labels that name the same mistake (compare says "nan", lesson 6's check says "overflow").
SAME = [{"nan", "overflow"}]


def classify(teacher_kind, kind, text, passed=False):
    """One outcome for one diagnosis of one mistake."""
    if passed:
        return "missed"
    if kind == teacher_kind or any({kind, teacher_kind} <= group for group in SAME):
        return "named"
    if kind not in GENERIC:
        return "misleading"
    # The diagnosis: the message without the lines that show values and shapes (a hint may follow them).
    head = "\n".join(line for line in (text or "").splitlines()
                     if not re.match(r"\s+(expected:|got:|largest difference)", line))
    families = [kinds for pattern, kinds in PHRASES if re.search(pattern, head)]
    if not families:
        return "vague"
    if any(teacher_kind not in kinds for kinds in families):
        return "misleading"  # a hint that points elsewhere misleads, even beside a right one
    return "named"


def _first_failure(spec, student):
    """(label, gradient name, got, expected) of the first failing gradient, in the hidden check's order."""
    answer = spec.answer(student)
    for label, inputs in spec.cases:
        try:
            got = answer(**inputs)
        except Exception as err:  # noqa: BLE001 - a crash is a failure the checks report as an exception
            return label, None, err, None
        result = spec.exercise.compare_case(label, inputs, got)
        for name in spec.exercise.names:
            if not result.comparisons[name].ok:
                return label, name, result.got[name], result.expected[name]
    return None


def run_compare(mistake, specs):
    spec = specs[mistake.spec]
    student = {**_defaults(spec), **mistake.student}
    found = _first_failure(spec, student)
    if found is None:
        return "missed", None, ""
    label, name, got, expected = found
    if name is None:
        return "vague", "exception", f"raised {got!r}"
    result = compare(name, got, expected)
    return classify(mistake.kind, result.kind, result.diagnosis), result.kind, result.diagnosis


def run_mechanism(mistake, specs):
    spec = specs[mistake.spec]
    student = {**_defaults(spec), **mistake.student}
    try:
        spec.exercise.check(spec.answer(student), spec.cases)
    except AssertionError as err:
        kind = getattr(err, "kind", None)
        return classify(mistake.kind, kind, str(err)), kind, str(err)
    return "missed", None, ""


def outcome_of(call, teacher_kind):
    """(outcome, kind, message) of running ``call()``, a hidden check pointed at a student's functions, e.g.
    ``outcome_of(lambda: lesson05.check_relu_backward(relu_forward, relu_backward), "mask_missing")``."""
    try:
        call()
    except AssertionError as err:
        kind = getattr(err, "kind", None)
        return classify(teacher_kind, kind, str(err)), kind, str(err)
    return "missed", None, ""


def run_hidden(mistake, specs):
    spec = specs[mistake.spec]
    if spec.hidden is None:
        return None, None, "no hidden check for this computation"
    student = {**_defaults(spec), **mistake.student}
    return outcome_of(lambda: spec.hidden(student), mistake.kind)


def _defaults(spec):
    from .exercises import RIGHT

    return dict(RIGHT[spec.key])


def run(which=("compare", "mechanism", "hidden"), corpus=CORPUS):
    """{diagnosis: {"counts": {outcome: n}, "cases": [(id, teacher kind, outcome, kind), ...]}}."""
    specs = all_specs()
    runners = {"compare": run_compare, "mechanism": run_mechanism, "hidden": run_hidden}
    out = {}
    torch.manual_seed(0)  # nothing here draws from it; set so that a stray draw is at least repeatable
    for name in which:
        counts, rows = Counter(), []
        for m in corpus:
            outcome, kind, text = runners[name](m, specs)
            if outcome is None:
                continue
            counts[outcome] += 1
            rows.append((m.id, m.kind, outcome, kind, text))
        out[name] = {"counts": {o: counts.get(o, 0) for o in OUTCOMES}, "total": sum(counts.values()), "cases": rows}
    return out


def right_answers_pass():
    """Every spec's right functions pass the mechanism (no false alarm): [(spec, message)] of those that do not."""
    from .exercises import RIGHT

    specs = all_specs()
    wrong = []
    for key, spec in specs.items():
        try:
            spec.exercise.check(spec.answer(dict(RIGHT[key])), spec.cases)
        except AssertionError as err:
            wrong.append((key, str(err)))
    return wrong
