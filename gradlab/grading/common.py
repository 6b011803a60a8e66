"""What every lesson's hidden checks share: the inputs they try and the one way they call student code.

Rules for a check (they make it work the same in the student's kernel and in the trusted grader, see
gradlab/grading/trial.py):
- it is decorated ``@graded`` and fails by raising AssertionError (``fail`` adds a kind label);
- it calls student code only through ``call_student``, and reads only the values that come back
  (tensors, numbers, strings, tuples/lists/dicts of them; any other object arrives as a stand-in);
- its inputs come from seeded generators (``cases``, ``randn``), never from the global random state, and
  it measures time only with ``student_seconds``;
- every expected value comes from torch (autograd, finite differences, torch's own functions) on the
  check's own inputs, never from a hand formula that the exercise asks for.
"""
import contextlib
import functools
import inspect
import signal
import threading
import time

import torch

from gradlab.check import check_grad as _check_grad
from gradlab.check import compare
from gradlab.diagnose import dtype_name

from . import guard, trial, wire

# --------------------------------------------------------------------------- failing and noting


class CheckFailure(AssertionError):
    """A failed check: the message the student reads, a fixed label of the mistake for the instructor, and
    optionally a picture (SVG text, e.g. the backward graph with the first wrong node marked) for the feedback."""

    def __init__(self, message, kind=None, gradient=None, figure=None):
        super().__init__(message)
        self.kind = kind
        self.gradient = gradient
        self.figure = figure


def fail(message, kind=None, gradient=None, figure=None):
    raise CheckFailure(message, kind=kind, gradient=gradient, figure=figure)


def note(text):
    """A sentence for the student about a check that passed (for example: passed with the reference helpers)."""
    t = trial.current()
    if t is None or t.mode == "local":
        print(text)
    if t is not None:
        t.notes.append(text)


def graded(check):
    """Make ``check`` a hidden check: local, recorded in the student's kernel, or replayed by the grader."""
    name = f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}"

    @functools.wraps(check)
    def run(*args, **kwargs):
        if trial.current() is not None:  # inside another check, or replayed by the grader
            return check(*args, **kwargs)
        mode = "record" if trial.record_mode() else "local"
        t = trial.Trial(mode, name)
        if mode == "local":
            with trial.running(t):
                return check(*args, **kwargs)
        verdict = "the check stopped"  # a BaseException from the student's code: the record still goes out
        try:
            with trial.running(t):
                check(*args, **kwargs)
                verdict = "passed"
        except AssertionError:
            verdict = "failed"
        except Exception as err:  # the grader replays the check and reports what really happened
            verdict = f"the check stopped: {type(err).__name__}"
        finally:
            trial.publish(t, verdict)

    run.check = check
    run.check_name = name
    return run


# --------------------------------------------------------------------------- inputs
def devices():
    """The devices a hidden test runs on: always the CPU, and CUDA where the machine has it."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def cases(seed, sizes=(1, 7, 64), dtypes=(torch.float32, torch.float64)):
    """Yield (label, generator, size, dtype, device) for every combination, each with its own seed.

    The label ("n=7, float64, cpu") goes into failure messages so a student knows which case failed.
    """
    for device in devices():
        for dtype in dtypes:
            for i, n in enumerate(sizes):
                gen = torch.Generator().manual_seed(seed * 1000 + i)
                yield f"n={n}, {dtype_name(dtype)}, {device.type}", gen, n, dtype, device


def randn(gen, *shape, dtype=torch.float32, device="cpu", scale=1.0):
    """Seeded normal random numbers made on the CPU (same values on every device), then moved."""
    return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device)


def scalar(gen, dtype, device, scale=1.0):
    """A seeded 0-dim tensor: a parameter such as w or b."""
    return randn(gen, 1, dtype=dtype, device=device, scale=scale).reshape(())


def labels(gen, n, dtype, device):
    """Random 0/1 labels of shape (n,); both values appear whenever n > 1, so no constant label passes by luck."""
    y = (torch.rand(n, generator=gen) < 0.5).double()
    if n > 1:
        y[0], y[1] = 0.0, 1.0
    return y.to(dtype=dtype, device=device)


def neuron_batch(gen, n, dtype, device):
    """x (n,), labels y (n,) and 0-dim w, b: a fresh random one-input neuron and batch (lessons 2 and 3)."""
    x = randn(gen, n, dtype=dtype, device=device)
    y = labels(gen, n, dtype, device)
    return x, y, scalar(gen, dtype, device, scale=2.0), scalar(gen, dtype, device)


#: A case's label ends so when its parameters sit near the loss's minimum (``near_minimum``).
NEAR_MINIMUM = "near the minimum"
#: How much smaller than the sum of its terms' sizes a gradient is made there. Measured on lessons 2-3's cases
#: (tests/test_near_minimum.py): six ways of writing the formula (loops and running means included) agree with
#: autograd to 1e-10 of the gradient, a thousandth of float64's tolerance, while a central difference errs by 1e-6
#: or more whatever its step (1e-3 to 1e-8): its error follows the size of the loss, not of the gradient. A
#: fourth-order stencil with a well-chosen step can still pass (an expert's tool; the static scan does not see it).
CANCELLATION = 1e6


def near_minimum(losses, params, cancellation=CANCELLATION):
    """0-dim float64 parameters near a stationary point of ``losses(*params).sum()`` (one loss per observation),
    moved off it so that each partial derivative is 1/cancellation of the sum of its terms' sizes, Σ_i |∂loss_i/∂p|.

    Newton's method with autograd's Hessian, in float64 on the CPU; the result is moved to each parameter's device.
    Raises RuntimeError when it does not converge (the checks' seeds are chosen so that it does: a test keeps them so).
    """
    from torch.autograd.functional import hessian, jacobian

    theta = torch.zeros(len(params), dtype=torch.float64)  # an unsaturated start: the minimum found is a tame one

    def total(t):
        return losses(*t).sum()

    for _ in range(100):
        step = torch.linalg.solve(hessian(total, theta), jacobian(total, theta))
        theta = theta - step
        if step.abs().max() <= 1e-14 * (1 + theta.abs().max()):
            break
    else:
        raise RuntimeError("near_minimum: Newton's method did not converge")
    if not theta.abs().max() <= 5:  # far out, every sigmoid saturates and the terms lose digits to rounding
        raise RuntimeError(f"near_minimum: the stationary point found is far out ({theta.tolist()})")
    sizes = jacobian(lambda t: losses(*t), theta).abs().sum(0)
    theta = theta + torch.linalg.solve(hessian(total, theta), sizes / cancellation)
    return [t.to(device=torch.as_tensor(p).device) for t, p in zip(theta, params)]


def near_minimum_cases(seed, count=2, n=64):
    """Yield (label, generator, n) for ``count`` float64 CPU cases whose parameters the check puts near_minimum."""
    for i in range(count):
        yield f"n={n}, float64, cpu, {NEAR_MINIMUM}", torch.Generator().manual_seed(seed * 1000 + 900 + i), n


def neuron_near_minimum(gen, n, per_observation):
    """x (n,), labels y (n,) and 0-dim w, b near a minimum of Σ_i per_observation(x, y, w, b)_i (lessons 2, 3)."""
    x, y, w, b = neuron_batch(gen, n, torch.float64, torch.device("cpu"))
    w, b = near_minimum(lambda w_, b_: per_observation(x, y, w_, b_), [w, b])
    return x, y, w, b


# --------------------------------------------------------------------------- comparing
def check_grad(name, got, expected, case, **tolerance):
    """gradlab.check.check_grad, with the outcome kept for the instructor's report of the class's mistakes."""
    result = compare(name, got, expected, **tolerance)
    _keep(name, result.status, result.kind, case)
    if not result.ok:
        fail(result.explain(case), kind=result.kind, gradient=name)
    return result


def check_tensor(name, got, expected, case, **tolerance):
    """check_grad, then insist on a tensor in the inputs' dtype and on their device (check_grad only notes those)."""
    check_grad(name, got, expected, case, **tolerance)
    if not isinstance(got, torch.Tensor):
        _keep(name, "wrong", "type", case)
        fail(f"{name} should be a tensor, but it is a {type(got).__name__} ({case}).", kind="type", gradient=name)
    if got.dtype != expected.dtype or got.device != expected.device:
        _keep(name, "wrong", "placement", case)
        fail(
            f"{name} has the right values but is {dtype_name(got.dtype)} on {got.device}; it should follow the inputs: "
            f"{dtype_name(expected.dtype)} on {expected.device} ({case}). Compute it from the input tensors (torch.ones_like(x) "
            "for a new one), without float(), .item(), .cpu(), NumPy or torch.tensor(...) around a result.",
            kind="placement", gradient=name,
        )


def _keep(name, status, kind, case):
    t = trial.current()
    if t is not None:
        t.outcomes.append({"gradient": name, "status": status, "kind": kind, "case": case})


# --------------------------------------------------------------------------- calling student code
_outside = [0.0]  # seconds in student code called outside any check (a visible test)


def student_seconds():
    """Seconds spent in student code so far in this check (as the student's kernel measured them)."""
    t = trial.current()
    return t.seconds if t is not None else _outside[0]


class _OutOfTime(BaseException):
    """Raised inside the student's function when its time is up (a BaseException: `except Exception` cannot eat it)."""


def call_student(fn, name, *args, case="", mutable=(), by_hand=True, seconds=None, timeout_hint="", refused=None):
    """Call the student's function ``name`` with ``args``; return what it returned, or fail saying what went wrong.

    mutable: positions of the arguments the function is meant to change in place (an optimiser step, a
      training epoch); their state afterwards is what the check reads. Changing any other argument in place
      fails the check, naming it: the caller still needs the original.
    by_hand: the exercise asks for a gradient derived by hand, so any use of autograd inside fails it.
    seconds: a time limit for this call (SIGALRM, where the platform has it).
    refused: {aten op name: "torch's own ... (torch.sigmoid)"} library functions the exercise asks to write itself
      (guard.no_autograd; with by_hand).
    """
    t = trial.current()
    if t is not None and t.mode == "replay":
        event = t.next_event(name)
        _restore(args, mutable, event.get("state"))
        output = _replayed_output(event)
    else:
        event, output = _call(fn, name, args, mutable, by_hand, seconds, refused)
        if t is not None and t.mode == "record":
            t.events.append(_for_record(event, output, args, mutable))
    if t is not None:
        t.seconds += float(event.get("seconds") or 0.0)
    else:
        _outside[0] += float(event.get("seconds") or 0.0)
    return _conclude(event, output, name, args, case, seconds, timeout_hint)


def _call(fn, name, args, mutable, by_hand, seconds, refused=None):
    event = {"name": name, "seconds": 0.0}
    if not callable(fn):
        event["error"] = {"type": "not callable", "message": type(fn).__name__}
        return event, None
    before = _snapshot(args, mutable)
    event["_ids"] = _identities(args, mutable)
    output = None
    started = time.perf_counter()
    usage = contextlib.nullcontext(None)
    try:
        with (guard.no_autograd(refused) if by_hand else usage) as watch, _time_limit(seconds):
            try:
                output = fn(*args)
            finally:
                event["seconds"] = time.perf_counter() - started
                if watch is not None and watch.reason:
                    event["autograd"] = watch.reason
    except guard.AutogradUsed:
        pass
    except _OutOfTime:
        event["timeout"] = seconds
    except (Exception, SystemExit) as err:  # a student's bug: reported plainly instead of a deep traceback
        event["error"] = {"type": type(err).__name__, "message": str(err)[:1000]}
        reason = guard.autograd_in_error(err)
        if reason:
            event["autograd"] = reason
    changed = _changed(before, args, _parameter_names(fn, len(args)))
    if changed:
        event["changed"] = changed
    return event, output


def _for_record(event, output, args, mutable):
    kept = {k: v for k, v in event.items() if k != "_ids"}
    if not any(k in event for k in ("error", "autograd", "timeout")):
        try:
            kept["output"] = wire.encode(output)
            kept["state"] = [[i, _capture(args[i], event["_ids"].get(i))] for i in mutable if i < len(args)]
        except (wire.TooLarge, TypeError) as err:
            kept.pop("output", None)
            kept["unsendable"] = str(err)[:200]
    return kept


def _replayed_output(event):
    if "unsendable" in event:
        return None
    return wire.decode(event.get("output"))


def _conclude(event, output, name, args, case, seconds, timeout_hint):
    where = f" ({case})" if case else ""
    error = event.get("error")
    if error and error.get("type") == "not callable":
        fail(f"`{name}` should be a function, but it is {error.get('message')}. Did you overwrite it?", kind="not a function")
    if str(event.get("autograd")).startswith(guard.LIBRARY):
        fail(
            f"`{name}` called {event['autograd']}{where}. This exercise asks you to write it yourself, from the "
            "formula in its docstring, with elementary tensor operations (torch.exp, +, /, **, .sum(), ...).",
            kind="library",
        )
    if event.get("autograd") == guard.COMPLEX_STEP:
        fail(
            f"`{name}` computed a derivative numerically{where}: {event['autograd']}. This exercise asks for the "
            "gradient derived by hand: write the formula you derived with real tensor operations.",
            kind="autograd",
        )
    if event.get("autograd"):
        fail(
            f"`{name}` used autograd{where}: {event['autograd']}. This exercise asks for the gradient derived by hand: "
            "write the formula with tensor operations, without .backward(), torch.autograd or requires_grad.",
            kind="autograd",
        )
    if event.get("timeout"):
        fail(f"`{name}` was still running after {event['timeout']:g} s{where}. {timeout_hint}".rstrip(), kind="timeout")
    if error:
        if error.get("type") == "NotImplementedError":
            fail(f"`{name}` is not written yet: replace the `raise NotImplementedError` line.", kind="not written")
        fail(f"`{name}` raised {error.get('type')}: {error.get('message')}\n  when called with: {_shapes(args)}{where}",
             kind="exception")
    if event.get("changed"):
        what = event["changed"][0]
        fail(
            f"`{name}` changed its input `{what}` in place{where}. Work on new tensors (`a = a * 2` rather than "
            "`a *= 2`, or `.clone()` first): the caller still needs the original.",
            kind="changed input",
        )
    if "unsendable" in event:
        fail(f"`{name}` returned something the grader cannot read ({event['unsendable']}){where}.", kind="type")
    return output


def _shapes(args):
    return ", ".join(
        f"{tuple(a.shape)} {dtype_name(a.dtype)}" if isinstance(a, torch.Tensor) else type(a).__name__ for a in args
    )


def _parameter_names(fn, count):
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return (names + [f"argument {i + 1}" for i in range(len(names), count)])[:count]


# --------------------------------------------------------------------------- changed in place?
def _snapshot(args, mutable):
    return [None if i in mutable else _copy(a, 0) for i, a in enumerate(args)]


def _copy(value, depth):
    if depth > 4:
        return value
    if isinstance(value, torch.Tensor):
        return ("tensor", value, value.detach().clone())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, value, [_copy(v, depth + 1) for v in value])
    if isinstance(value, dict):
        return ("dict", value, {k: _copy(v, depth + 1) for k, v in value.items()})
    return ("object", value, None)


def _changed(before, args, names):
    found = []
    for snap, name in zip(before, names):
        if snap is not None:
            _compare(snap, name, found)
    return found


def _compare(snap, path, found):
    kind, obj, saved = snap
    if kind == "tensor":
        if not _same_tensor(obj, saved):
            found.append(path)
    elif kind in ("list", "tuple"):
        if len(obj) != len(saved) or any(o is not s[1] for o, s in zip(obj, saved)):
            found.append(path)
        else:
            for i, s in enumerate(saved):
                _compare(s, f"{path}[{i}]", found)
    elif kind == "dict":
        if obj.keys() != saved.keys() or any(obj[k] is not s[1] for k, s in saved.items()):
            found.append(path)
        else:
            for k, s in saved.items():
                _compare(s, f"{path}[{k!r}]", found)


def _same_tensor(now, saved):
    if now.shape != saved.shape or now.dtype != saved.dtype:
        return False
    now = now.detach()
    if now.is_floating_point() or now.is_complex():
        return bool(((now == saved) | (now.isnan() & saved.isnan())).all())
    return bool(torch.equal(now, saved))


# --------------------------------------------------------------------------- state of mutable arguments
def _identities(args, mutable):
    """id() of every entry of the mutable dicts and lists, before the call: did the student replace one?"""
    out = {}
    for i in mutable:
        if i < len(args) and isinstance(args[i], dict):
            out[i] = {k: id(v) for k, v in args[i].items()}
        elif i < len(args) and isinstance(args[i], list):
            out[i] = dict(enumerate(map(id, args[i])))
    return out


def _capture(value, ids=None):
    """What a mutable argument holds after the call, as data (replay puts it back into the grader's object).

    A dict or list entry is kept as [key, same, state]: ``same`` says whether it is still the object it was
    before the call (updated in place) or a new one the student put there.
    """
    ids = ids or {}
    if isinstance(value, torch.Tensor):
        return {"tensor": wire.encode(value)}
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        entries = [[wire.encode(k), ids.get(k) == id(v), _capture(v) if _capturable(v) else {"value": wire.encode(v)}]
                   for k, v in items]
        return {"dict" if isinstance(value, dict) else "list": entries}
    if isinstance(value, torch.nn.Module):
        extra = value.__gradlab_state__() if hasattr(value, "__gradlab_state__") else None
        return {"module": wire.encode(dict(value.state_dict())), "extra": wire.encode(extra)}
    return {"value": wire.encode(value)}


def _capturable(value):
    return isinstance(value, (torch.Tensor, dict, list, torch.nn.Module))


def _restore(args, mutable, states):
    for entry in states or []:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)):
            raise wire.Malformed("a mutable argument's state is not [position, state]")
        i, state = entry
        if i in mutable and i < len(args):
            _put_back(args[i], state)


def _put_back(target, state):
    """Make the grader's object hold what the student's object held after the call."""
    if not isinstance(state, dict):
        raise wire.Malformed("a mutable argument's state is not a dict")
    if "tensor" in state and isinstance(target, torch.Tensor):
        with torch.no_grad():
            target.data = wire.decode(state["tensor"]).to(target.device)
    elif "dict" in state and isinstance(target, dict) or "list" in state and isinstance(target, list):
        _put_back_entries(target, state.get("dict", state.get("list")))
    elif "module" in state and isinstance(target, torch.nn.Module):
        target.load_state_dict(wire.decode(state["module"]), strict=False)
        if hasattr(target, "__gradlab_restore__"):
            target.__gradlab_restore__(wire.decode(state.get("extra")))


def _put_back_entries(target, entries):
    """Entries the student updated in place stay the same objects; entries it replaced become new ones."""
    if not isinstance(entries, list):
        raise wire.Malformed("entries are not a list")
    new = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], dict)):
            raise wire.Malformed("an entry is not [key, same, state]")
        key, same, state = _key(entry[0]), entry[1] is True, entry[2]
        old = target[key] if isinstance(target, dict) and key in target or (
            isinstance(target, list) and isinstance(key, int) and 0 <= key < len(target)) else None
        if same and old is not None and _capturable(old):
            _put_back(old, state)
            new[key] = old
        else:
            new[key] = _value_of(state)
    if isinstance(target, dict):
        target.clear()
        target.update(new)
    else:
        target[:] = [new[k] for k in sorted(k for k in new if isinstance(k, int))]


def _key(encoded):
    key = wire.decode(encoded)
    if not isinstance(key, (str, int, float, bool, tuple, type(None))):
        raise wire.Malformed("a key is not hashable data")
    return key


def _value_of(state):
    if "tensor" in state:
        return wire.decode(state["tensor"])
    if "dict" in state or "list" in state:
        out = {} if "dict" in state else []
        _put_back_entries(out, state.get("dict", state.get("list")))
        return out
    return wire.decode(state.get("value"))


@contextlib.contextmanager
def attempt():
    """A part of a check whose failure the check handles itself (a composite's first try with the student's own
    helpers): if it fails, its comparisons are dropped from the instructor's report, which keeps only what
    decided the verdict."""
    t = trial.current()
    kept = len(t.outcomes) if t is not None else 0
    try:
        yield
    except AssertionError:
        if t is not None:
            del t.outcomes[kept:]
        raise


# --------------------------------------------------------------------------- composites and time
@contextlib.contextmanager
def reference_helpers(fn, helpers):
    """Run a composite exercise with the grader's own helpers in place of the student's, so that a slip in a
    helper costs only the helper's cell: rebinds the names in ``helpers`` in ``fn``'s globals (the notebook)."""
    t = trial.current()
    namespace = getattr(fn, "__globals__", None)
    if (t is not None and t.mode == "replay") or not isinstance(namespace, dict):
        yield
        return
    saved = {name: namespace[name] for name in helpers if name in namespace}
    for name, reference in helpers.items():
        namespace[name] = _unguarded(reference)
    try:
        yield
    finally:
        for name in helpers:
            if name in saved:
                namespace[name] = saved[name]
            else:
                namespace.pop(name, None)


def _unguarded(reference):
    @functools.wraps(reference)
    def helper(*args, **kwargs):
        with guard.suspended():
            return reference(*args, **kwargs)
    return helper


@contextlib.contextmanager
def _time_limit(seconds):
    """Interrupt the block after ``seconds`` where the platform allows it (SIGALRM, main thread only)."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

