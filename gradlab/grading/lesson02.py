"""Hidden checks of lesson 2 (gradient descent on the sigmoid neuron's mean squared error).

J(w, b) = (1/N) Σ_i (σ(w·x_i + b) − y_i)², with x and y of shape (N,) and w, b 0-dim tensors.
Expected values come from torch alone, computed before the student's function is called: gradients from
autograd, a descent step from ``torch.optim.SGD``, the best cost a neuron can reach from Newton's method
with autograd's gradient and Hessian. None of the formulas the exercises ask for is written out here.

The descent loop runs on fresh data shaped like the cell data (areas in thousands, labels 0/1), from starts
the lesson does not use, and must bring J under the threshold that ``threshold_for`` computes for that data
by the rule the lesson states, stopping at the first step that gets there, within ``MAX_STEPS`` steps.
"""
import hashlib
import math

import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import autograd_grads, compare, factor_by_case
from gradlab.diagnose import dtype_name
from gradlab.grading import common
from gradlab.grading.lesson01 import check_scalar, formula_trace, helpers_note, judge, scalar_values

# The loop must close all but this fraction of the gap between the best constant guess and the best neuron.
GAP_LEFT = 0.05
# fit's docstring: it gets under the threshold within this many steps (the lesson's rate needs well under 100;
# any rate from 0.5 to 45 that settles needs under 2,000).
MAX_STEPS = 10_000
# Seconds one run of fit may take before it is stopped, and all runs of one check together. A loop that stays
# within MAX_STEPS needs about a second at most here (the lesson's own: 0.05 s), so these only ever stop an
# endless loop; the verdict on a slow descent comes from its number of steps, which no busy machine changes.
FIT_SECONDS = 20.0
FIT_BUDGET_SECONDS = 45.0  # the cell's limit under nbgrader is 60 s (grader/nbgrader_config.py)
# Starts the hidden test descends from; the lesson itself starts at (1, 0).
FIT_STARTS = ((0.0, 0.0), (4.0, -2.0), (-1.0, 1.0))


def _as(value, x):
    return torch.as_tensor(value, dtype=x.dtype, device=x.device)


def predict(x, w, b):
    """σ(w·x + b) for x of shape (N,): torch's linear layer with a 1×1 weight, then torch.sigmoid."""
    return torch.sigmoid(F.linear(x.reshape(-1, 1), _as(w, x).reshape(1, 1), _as(b, x).reshape(1)).reshape(-1))


def cost(x, y, w, b):
    """The reference cost J(w, b): torch's mean squared error of the neuron's predictions; w, b numbers or 0-dim."""
    return F.mse_loss(predict(x, w, b), y.to(x.dtype))


# --------------------------------------------------------------------------- the grader's own helpers
def reference_dJ_dw(x, y, w, b):
    return autograd_grads(lambda w_: cost(x, y, w_, _as(b, x)), _as(w, x))[0]


def reference_dJ_db(x, y, w, b):
    return autograd_grads(lambda b_: cost(x, y, _as(w, x), b_), _as(b, x))[0]


def sgd_step(x, y, w, b, lr):
    """One step of torch.optim.SGD with autograd's gradient of J: the reference for gd_step, (w_new, b_new)."""
    params = [_as(w, x).detach().clone().requires_grad_(True), _as(b, x).detach().clone().requires_grad_(True)]
    optimizer = torch.optim.SGD(params, lr=lr)
    with torch.enable_grad():
        cost(x, y, *params).backward()
    optimizer.step()
    return params[0].detach(), params[1].detach()


reference_gd_step = sgd_step
STEP_HELPERS = {"dJ_dw": reference_dJ_dw, "dJ_db": reference_dJ_db}
FIT_HELPERS = {"gd_step": reference_gd_step, **STEP_HELPERS}


# --------------------------------------------------------------------------- the threshold rule
def best_cost(x, y):
    """The smallest J(w, b) this neuron can reach on (x, y), in float64 on the CPU: a grid, then Newton.

    The grid runs over standardised coordinates (z = a·u + c with u = (x − mean)/std), so it fits any
    scale of x; Newton's method, with autograd's gradient and Hessian, then polishes the best grid point,
    halving a step that does not lower J.
    """
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    mean, std = x.mean(), x.std(unbiased=False).clamp_min(1e-12)
    u = (x - mean) / std
    a, c = torch.meshgrid(torch.linspace(-30, 30, 61, dtype=torch.float64),
                          torch.linspace(-15, 15, 31, dtype=torch.float64), indexing="ij")
    h = torch.sigmoid(torch.addcmul(c[..., None], a[..., None], u))  # every grid neuron's predictions
    grid = F.mse_loss(h, y.expand_as(h), reduction="none").mean(dim=-1)
    best = int(grid.argmin())
    p = torch.stack([a.flatten()[best], c.flatten()[best]])

    def J(q):
        return cost(u, y, q[0], q[1])

    for _ in range(100):
        g = torch.autograd.functional.jacobian(J, p)
        H = torch.autograd.functional.hessian(J, p)
        step = -torch.linalg.solve(H, g) if torch.linalg.eigvalsh(H).min() > 0 else -g
        t, now = 1.0, J(p)
        while t > 1e-10 and J(p + t * step) >= now:
            t /= 2
        if t <= 1e-10:  # no step lowers J any more: this is the minimum to float64 precision
            break
        p = p + t * step
    return float(J(p))


def threshold_for(x, y):
    """The cost a descent must get under on (x, y): the best neuron's J plus GAP_LEFT of the gap to the
    best constant prediction (predicting the mean of y everywhere, whose J is the variance of y)."""
    x64, y64 = x.detach().double().cpu(), y.detach().double().cpu()
    key = hashlib.sha256(x64.numpy().tobytes() + b"|" + y64.numpy().tobytes()).hexdigest()
    if key not in _thresholds:  # Newton's method takes a fraction of a second; the same data comes back often
        constant = float(y64.var(unbiased=False))
        best = best_cost(x64, y64)
        _thresholds[key] = best + GAP_LEFT * (constant - best)
    return _thresholds[key]


_thresholds = {}


# --------------------------------------------------------------------------- inputs
def cell_like(gen, n, dtype=torch.float64, device="cpu"):
    """n samples shaped like the cell data: log-normal areas (mean about 0.65, in thousands) and labels
    drawn from a sigmoid boundary whose position and steepness change from one data set to the next."""
    area = torch.exp(-0.55 + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64))
    steep = 9.0 + 6.0 * float(torch.rand((), generator=gen, dtype=torch.float64))
    edge = 0.45 + 0.45 * float(torch.rand((), generator=gen, dtype=torch.float64))
    p = torch.sigmoid(steep * (area - edge))
    y = (torch.rand(n, generator=gen, dtype=torch.float64) < p).double()
    return area.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- helpers
def _pair(result, name, what, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        common.fail(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).",
                    kind="not a pair")
    return result


def _near(got, expected, dtype):
    """got ≈ expected to within float rounding of the dtype, for spotting a known mistake."""
    return abs(float(got) - float(expected)) <= 1e3 * torch.finfo(dtype).eps * max(1.0, abs(float(expected)))


# --------------------------------------------------------------------------- the partial derivatives
#: The computation both partial derivatives differentiate, declared once for the diagnosis (gradlab.variants):
#: z_i = w·x_i + b, h_i = σ(z_i), J = (1/N) Σ (h_i − y_i)², in the lesson's notation.
NEURON = V.Graph(V.Scale("z", "w", "x", "b"), V.Sigmoid("h", "z"), V.MSE("J", "h", "y"), data=("x",),
                 grad_notation={"h": "∂J/∂h", "z": "∂J/∂z", "w": "∂J/∂w", "b": "∂J/∂b"})
PARTIALS = (V.Exercise(NEURON, "w", name="∂J/∂w"), V.Exercise(NEURON, "b", name="∂J/∂b"))


@common.graded
def check_dJ_dw(dJ_dw):
    """dJ_dw(x, y, w, b) -> 0-dim ∂J/∂w, against autograd."""
    _check_partial(dJ_dw, "dJ_dw", "∂J/∂w", 0, seed=201)


@common.graded
def check_dJ_db(dJ_db):
    """dJ_db(x, y, w, b) -> 0-dim ∂J/∂b, against autograd."""
    _check_partial(dJ_db, "dJ_db", "∂J/∂b", 1, seed=202)


def _check_partial(fn, name, what, which, seed):
    """Every case first, then one message: the diagnosis names a formula mistake only when it fits every case."""
    runs = []
    for label, gen, n, dtype, device in common.cases(seed, sizes=(1, 7, 64, 569)):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        expected = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)[which]
        got = common.call_student(fn, name, x, y, w, b, case=label)
        runs.append((label, {"x": x, "y": y, "w": w, "b": b}, got, expected))
    for label, gen, n in common.near_minimum_cases(seed):
        x, y, w, b = common.neuron_near_minimum(gen, n, lambda x, y, w, b: (predict(x, w, b) - y) ** 2 / n)
        expected = autograd_grads(lambda w_, b_: cost(x, y, w_, b_), w, b)[which]
        got = common.call_student(fn, name, x, y, w, b, case=label)
        runs.append((label, {"x": x, "y": y, "w": w, "b": b}, got, expected))
    exercise = PARTIALS[which]
    # N/2 × the expected value in every case (2/N lost): one case alone shows ½, 3.5 or 32, none of them the slip
    both = factor_by_case([(got, expected, len(inputs["y"])) for _, inputs, got, expected in runs])
    if both is not None:
        label, _, got, expected = next(run for run in runs if not compare("", run[2], run[3]).ok)
        try:
            check_scalar(what, got, expected, label)
        except common.CheckFailure as failure:
            lines = str(failure).split("\n")
            common.fail("\n".join([f"{what} is wrong ({label}): {both}"] + lines[1:]), kind="factor", gradient=what)
    judge(exercise, runs, lambda label, got, expected: check_scalar(what, got, expected, label),
          values_of=scalar_values(what), trace=lambda result, found: formula_trace(exercise, result, found))


# --------------------------------------------------------------------------- one step
@common.graded
def check_gd_step(gd_step):
    """gd_step(x, y, w, b, lr) -> (w_new, b_new), two 0-dim tensors: w − η·∂J/∂w and b − η·∂J/∂b, both
    gradients at the given (w, b); w and b themselves are left as they were.

    Run with the grader's dJ_dw and dJ_db in place of the student's (a slip there costs their cells only)."""
    first = None
    for label, gen, n, dtype, device in common.cases(203, sizes=(1, 7, 64, 569)):
        x, y, w, b = common.neuron_batch(gen, n, dtype, device)
        lr = round(0.3 + 4.0 * float(torch.rand((), generator=gen)), 2)  # 2.56, 3.15, 2.42, 1.81: never 1, so a missing η shows
        case = f"{label}, lr = {lr}"
        w_expected, b_expected = sgd_step(x, y, w, b, lr)
        with common.reference_helpers(gd_step, STEP_HELPERS):
            result = common.call_student(gd_step, "gd_step", x, y, w, b, lr, case=case)
        w_new, b_new = _pair(result, "gd_step", "w_new, b_new", case)
        for got, old, expected, p in ((w_new, w, w_expected, "w"), (b_new, b, b_expected, "b")):
            if not isinstance(got, torch.Tensor):
                common.fail(
                    f"{p}_new should be a 0-dim tensor, but it is a {type(got).__name__} ({case}). Compute it from "
                    f"the tensors {p} and ∂J/∂{p}, without .item() or float(): the next step, and fit, go on with it.",
                    kind="type", gradient=f"{p}_new")
            _diagnose_step(p, got, old, expected, lr, x, y, w, b, w_new, dtype, case)
            # The step is a difference of two numbers of size |w|: allow for their rounding, not the step's.
            atol = 8 * torch.finfo(dtype).eps * (1 + abs(float(old)))
            if got.numel() == 1:
                common.check_grad(f"the step in {p} ({p}_new − {p})", got.detach().reshape(()).to(old) - old,
                                  expected - old, case, atol=atol)
            check_scalar(f"{p}_new", got, expected, case)
        if first is None and n > 1:
            first = ((x, y, w, b, lr), (w_expected, b_expected), case)
    _step_note(gd_step, *first)


def _step_note(gd_step, args, expected, case):
    """gd_step passed with the course's dJ_dw and dJ_db; say so if the student's own give another step."""
    try:
        w_new, b_new = _pair(common.call_student(gd_step, "gd_step", *args, case=case), "gd_step", "", case)
        right = all(isinstance(g, torch.Tensor) and g.shape == e.shape and torch.allclose(g.detach().to(e), e)
                    for g, e in ((w_new, expected[0]), (b_new, expected[1])))
    except AssertionError:
        right = False
    if not right:
        common.note(f"`gd_step` passed with the course's `dJ_dw` and `dJ_db` in its place. With your own it does not "
                    f"give the right step ({case}): fix them in their own exercises (their checks say what is wrong).")


def _diagnose_step(p, got, old, expected, lr, x, y, w, b, w_new, dtype, case):
    """Name the classic mistakes of a descent step before the generic comparison does (``expected``: SGD's step)."""
    if got.numel() != 1 or not got.is_floating_point():
        return
    step, right = got.detach().reshape(()).to(old) - old, expected - old
    if float(right) == 0 or _near(step, right, dtype):
        return
    if _near(step, -right, dtype):
        common.fail(
            f"{p}_new moved uphill ({case}): it is {p} + η·∂J/∂{p}. Gradient descent subtracts: "
            f"{p} ← {p} − η·∂J/∂{p}, because the gradient points the way J grows.",
            kind="uphill", gradient=f"{p}_new")
    if _near(step, right / lr, dtype):
        common.fail(
            f"{p}_new is {p} − ∂J/∂{p}: the learning rate is missing ({case}). Multiply the gradient by lr.",
            kind="no learning rate", gradient=f"{p}_new")
    if p == "b" and isinstance(w_new, torch.Tensor) and w_new.numel() == 1 and w_new.is_floating_point():
        _, stale = sgd_step(x, y, w_new.detach().reshape(()).to(w), b, lr)  # b's step taken at the new w
        if _near(got.detach().reshape(()).to(old), stale, dtype):
            common.fail(
                f"b_new used ∂J/∂b at the NEW w ({case}). Compute both gradients at the old (w, b) first, "
                f"then update both: one step moves both parameters from the same point.",
                kind="stale gradient", gradient="b_new")


# --------------------------------------------------------------------------- the loop
def run_fit(fit, x, y, w0, b0, threshold, case, seconds=None):
    """Run the student's fit from (w0, b0) with a time limit and check what it returns against the exercise:

    (w, b, costs) with w, b 0-dim tensors and costs a list of numbers, costs[0] = J at the start, costs[-1] = J
    at the returned (w, b) and under ``threshold``, every earlier entry not under it (the loop stops at the first
    step that gets there), at most MAX_STEPS steps. Returns (w, b, costs, seconds).
    """
    seconds = FIT_SECONDS if seconds is None else seconds
    dtype, device = x.dtype, x.device
    w = torch.tensor(w0, dtype=dtype, device=device)
    b = torch.tensor(b0, dtype=dtype, device=device)
    J_start = float(cost(x, y, w0, b0))
    before = common.student_seconds()
    result = common.call_student(
        fit, "fit", x, y, w, b, threshold, case=case, seconds=seconds,
        timeout_hint="Does the loop stop as soon as J < threshold, and give up after a maximum number of steps?")
    elapsed = common.student_seconds() - before
    if elapsed > seconds:  # where no alarm could stop it (not the main thread, or no SIGALRM)
        common.fail(f"`fit` took {elapsed:.1f} s; it has {seconds:g} s ({case}).", kind="timeout")
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        common.fail(f"`fit` should return (w, b, costs), but returned {type(result).__name__} ({case}).",
                    kind="fit result")
    w_end, b_end, costs = result
    costs = _numbers(costs, case)
    J_end = _final_cost(x, y, w_end, b_end, case)
    steps = len(costs) - 1
    where = f"{case}, start (w, b) = ({w0:g}, {b0:g}), threshold {threshold:.5f}"
    if not math.isclose(costs[0], J_start, rel_tol=1e-3, abs_tol=1e-6):
        common.fail(
            f"costs[0] is {costs[0]:.6g}, but J at the start is {J_start:.6g} ({where}). Start from the w and b "
            f"that fit is given, and record J there before the first step.", kind="costs")
    if not math.isclose(costs[-1], J_end, rel_tol=1e-3, abs_tol=1e-6):
        common.fail(
            f"costs[-1] is {costs[-1]:.6g}, but J at the (w, b) you returned is {J_end:.6g} ({where}). Record J "
            f"after every step, so that the last entry is J at the returned parameters.", kind="costs")
    if not costs[-1] < threshold:
        common.fail(
            f"after {steps} steps J = {costs[-1]:.5f}, not under the threshold ({where}). Too small a learning rate "
            f"crawls, too large a one bounces; does the loop stop only when J < threshold (or after the maximum "
            f"number of steps)?", kind="above threshold")
    early = next((k for k, c in enumerate(costs[:-1]) if c < threshold), None)
    if early == 0:
        common.fail(
            f"J at the start, {costs[0]:.5f}, is already under the threshold {threshold:.5f} ({where}), so fit should "
            f"return at once: the (w, b) it was given and costs = [{costs[0]:.5f}]. Yours went on for {steps} "
            f"step{'s' if steps > 1 else ''}. Test J < threshold before each step, the first one included (a loop "
            f"that runs a fixed number of steps, or keeps only some of the costs, cannot stop there).",
            kind="kept going")
    if early is not None:
        common.fail(
            f"J was under the threshold after step {early} (J = {costs[early]:.5f} < {threshold:.5f}), but the loop "
            f"went on to step {steps} ({where}). fit should stop at the first point where J < threshold: test the "
            f"cost before each step.", kind="kept going")
    if steps > MAX_STEPS:
        common.fail(
            f"`fit` needed {steps:,} steps to get under the threshold; it may take at most {MAX_STEPS:,} ({where}). "
            f"It crawls: choose a larger learning rate (the lesson's sections on the learning rate say how large "
            f"is still safe).", kind="too many steps")
    if not J_end < threshold * (1 + 1e-6):
        common.fail(f"J at the returned (w, b) is {J_end:.6g}, not under the threshold {threshold:.6g} ({where}).",
                    kind="above threshold")
    return w_end, b_end, costs, elapsed


def _numbers(costs, case):
    if isinstance(costs, (str, bytes, dict)) or not hasattr(costs, "__len__"):
        common.fail(f"costs should be a list of numbers, J at the start and after every step, but it is a "
                    f"{type(costs).__name__} ({case}).", kind="costs")
    values = []
    for c in costs:
        if isinstance(c, torch.Tensor) and c.numel() == 1:
            values.append(float(c.detach().reshape(())))
        elif isinstance(c, (int, float)) and not isinstance(c, bool):
            values.append(float(c))
        else:
            common.fail(f"costs should be a list of numbers (one J per point of the path), but it holds a "
                        f"{type(c).__name__} ({case}).", kind="costs")
    if not values:
        common.fail(f"costs is empty; it should start with J at the starting point ({case}).", kind="costs")
    return values


def _final_cost(x, y, w, b, case):
    for p, v in (("w", w), ("b", b)):
        if not isinstance(v, torch.Tensor) or v.numel() != 1 or not v.is_floating_point():
            common.fail(f"`fit` should return {p} as a 0-dim tensor, not {v!r:.60} ({case}).", kind="type",
                        gradient=p)
        if v.dim() != 0:
            common.fail(f"`fit` should return {p} as a 0-dim tensor, but it has shape {tuple(v.shape)} ({case}). "
                        f"Start from the 0-dim w and b that fit is given, and keep them 0-dim.", kind="shape", gradient=p)
        if v.dtype != x.dtype or v.device != x.device:
            common.fail(f"`fit` returned {p} as {dtype_name(v.dtype)} on {v.device}; it should follow x: "
                        f"{dtype_name(x.dtype)} on {x.device} ({case}).", kind="placement", gradient=p)
    # In the data's dtype, as the student's loop measured it when it decided to stop.
    return float(cost(x, y, w.detach().reshape(()).to(x), b.detach().reshape(()).to(x)))


@common.graded
def check_fit(fit):
    """fit(x, y, w, b, threshold) -> (w, b, costs) gets J under threshold_for(x, y) on fresh data, stopping at the
    first step that does, within MAX_STEPS steps; given a threshold above J at the start it takes no step.

    Run with the grader's gd_step, dJ_dw and dJ_db in place of the student's (a slip there costs their cells only)."""
    for i, (label, gen, n, dtype, device) in enumerate(common.cases(204, sizes=(200, 569, 1500))):
        x, y = cell_like(gen, n, dtype, device)
        threshold = threshold_for(x, y)
        w0, b0 = FIT_STARTS[i % len(FIT_STARTS)]
        case = f"{label}, fresh data"
        with common.reference_helpers(fit, FIT_HELPERS):
            run_fit(fit, x, y, w0, b0, threshold, case)
            # A threshold above J at the start: a loop that tests it takes no step; one that ignores it, or keeps
            # only some of the costs it passed, cannot tell.
            above = float(cost(x, y, w0, b0)) + 0.01
            w_end, b_end, costs, _ = run_fit(fit, x, y, w0, b0, above, f"{case}, threshold above J at the start")
        if len(costs) != 1:  # run_fit has already failed such a loop; kept as a guard
            common.fail(f"`fit` took steps although J at the start was already under the threshold ({case}).",
                        kind="kept going")
        spent = common.student_seconds()
        if spent > FIT_BUDGET_SECONDS:
            common.fail(
                f"`fit` has taken {spent:.0f} s so far over {2 * (i + 1)} runs; all runs together may take "
                f"{FIT_BUDGET_SECONDS:g} s (the lesson's loop needs well under a second for all of them). Work on "
                f"whole tensors, without a Python loop over the samples, and use a learning rate that does not crawl.",
                kind="timeout")
