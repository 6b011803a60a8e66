"""Hidden checks of lesson 7 (capstone: the MNIST network trained with the student's own backprop).

Parameters are a dict {"W1", "b1", "W2", "b2", "W3", "b3"} with W of shape (D_in, D_out), as in lesson 5.

How these checks keep a point meaning "derived by hand, and right":
- every call of student code goes through ``common.call_student``, which fails any use of autograd and any
  change of an input in place;
- every expected value comes from torch (autograd, F.cross_entropy, torch.optim.SGD) on the check's own
  inputs, computed before the student's function sees them;
- a composite exercise (forward, backward, softmax_cross_entropy, train_epoch, the MNIST run) is graded with
  the student's own helpers first; if that fails, it is graded again with the grader's helpers in their place
  (``_GraderHelpers``). A pass that way passes the cell, and a note names the helper to fix, so one slip costs
  the helper's cell only. The grader's layer helpers keep the student's own cache objects (the backward finds
  its inputs by the identity of the cache it is given), so a backward that reads a cache itself still works.

How a wrong gradient is explained (issue 15): every case is graded first; then the message comes from the most
informative failing case and names a formula mistake only when one fits every case tried, from the computations
declared once below for gradlab.variants (``LINEAR``, ``RELU``, ``LOG_SOFTMAX``, ``LOSS``, ``NETWORK``, ``STEP``), in
the lesson's notation, with the fix in one sentence. A failure of the whole backward pass names its first wrong
gradient and what follows from it, and carries the backward pass drawn with that node marked (``figure``; drawn in
the grader's replay or a local run, never while the student's kernel records). ``trace`` draws the same picture for
the lesson's own comparison cell.
"""
import contextlib
import functools
import threading

import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import autograd_grads, compare
from gradlab.grading import common, trial
from gradlab.grading.lesson01 import fail_with_trace, formula_trace, judge, where_line
from gradlab.grading.lesson05 import mask_message
from gradlab.training import minibatches

from . import mnist_run

NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
BACKPROP_ORDER = ("W3", "b3", "W2", "b2", "W1", "b1")
INTERMEDIATES = ("z3", "W3", "b3", "a2", "z2", "W2", "b2", "a1", "z1", "W1", "b1")  # backward_and_step's keys
LAYER_HELPERS = ("linear_forward", "relu_forward", "linear_backward", "relu_backward")
NETWORK_HELPERS = ("forward", "backward", "softmax_cross_entropy", "sgd_step")
ALL_HELPERS = NETWORK_HELPERS + LAYER_HELPERS + ("log_softmax_backward",)
_NETWORK_SHOWN = "`forward`, `backward`, `softmax_cross_entropy` and `sgd_step` (and layer functions)"

# --------------------------------------------------------------------------- the computations, declared once
# for the diagnosis (gradlab.variants), in the lesson's notation. A layer's backward is graded as the gradient of
# Σ out · dout for the upstream gradient dout; the network's backward as that of Σ logits · dlogits.
LINEAR = V.Exercise(V.Graph(V.Linear("out", "x", "W", "b"), V.Dot("J", "out", "dout"), upstream="dout",
                            grad_notation={"out": "dout", "x": "dx", "W": "dW", "b": "db"}),
                    ("x", "W", "b"), name=("dx", "dW", "db"))
RELU = V.Exercise(V.Graph(V.ReLU("out", "x"), V.Dot("J", "out", "dout"), upstream="dout",
                          grad_notation={"out": "dout", "x": "dx"}), "x", name="dx")
LOG_SOFTMAX = V.Exercise(V.Graph(V.LogSoftmax("logp", "z"), V.Dot("J", "logp", "dlogp"), upstream="dlogp",
                                 grad_notation={"logp": "dlogp", "z": "dz"}), "z", name="dz")
LOSS = V.Exercise(V.Graph(V.CrossEntropy("loss", "logits", "labels"), grad_notation={"logits": "dlogits"}),
                  "logits", name="dlogits", atol=lambda inputs: _dlogits_atol(inputs["logits"]))
NETWORK = V.Graph(V.Linear("z1", "X", "W1", "b1"), V.ReLU("a1", "z1"), V.Linear("z2", "a1", "W2", "b2"),
                  V.ReLU("a2", "z2"), V.Linear("logits", "a2", "W3", "b3"), V.Dot("J", "logits", "dlogits"),
                  upstream="dlogits", data=("X",),
                  grad_notation={t: f"d{t}" for t in ("logits", "a2", "z2", "a1", "z1") + NAMES})
BACKWARD = V.Exercise(NETWORK, BACKPROP_ORDER, name=tuple(f"d{k}" for k in BACKPROP_ORDER))
# backward_and_step's loss, with the lesson's names for every intermediate (z3 are the logits)
STEP_GRAPH = V.Graph(V.Linear("z1", "X", "W1", "b1"), V.ReLU("a1", "z1"), V.Linear("z2", "a1", "W2", "b2"),
                     V.ReLU("a2", "z2"), V.Linear("z3", "a2", "W3", "b3"), V.CrossEntropy("L", "z3", "y"),
                     data=("X",), grad_notation={k: f"dL/d{k}" for k in INTERMEDIATES})
STEP_ORDER = ("z3", "a2", "W3", "b3", "z2", "a1", "W2", "b2", "z1", "W1", "b1")  # from the loss down, as drawn
STEP_NODE = {k: V.Exercise(STEP_GRAPH, k, name=f"dL/d{k}") for k in INTERMEDIATES}  # one gradient on its own


def trace(X, y, params, grads, title=None):
    """The network's backward pass for the mean cross-entropy of ``X`` against the labels ``y``, with the gradients in
    ``grads`` ({"z3": dL/dz3, "W3": ..., "b1": ...}, any may be left out; other keys are ignored) marked against
    autograd's: right, the first wrong one (with the likely slip), wrong only because of it, wrong for another
    reason. A notebook shows it as a picture; ``.explain()`` says it in words."""
    given = {k: v for k, v in (grads or {}).items() if k in INTERMEDIATES and isinstance(v, torch.Tensor)}
    traced = V.locate(STEP_GRAPH, {"X": X, "y": y, **{k: params[k] for k in NAMES}}, grads=given)
    traced.title = title or "the backward pass, gradient by gradient: yours against autograd's"
    return traced


# --------------------------------------------------------------------------- grading every case, then speaking
_state = threading.local()


def _drawing():
    return getattr(_state, "drawing", True)


@contextlib.contextmanager
def _without_drawing():
    """No pictures (and no placing in the backward pass) for failures nobody reads: the first try of a composite
    with the student's helpers (only its first line goes into a note) and the quiet checks of the helpers."""
    saved = _drawing()
    _state.drawing = False
    try:
        yield
    finally:
        _state.drawing = saved


def _grade(exercise, runs, strict, *, where=False, repeated=False):
    """lesson01.judge (every case graded first, then one message) with the most informative failing case tried first,
    so that what the check says from one case (a shape, NaN, a constant factor) comes from a case that shows it best
    (not n = 1); a named formula mistake carries the backward pass drawn with its node marked. ``repeated``: when no
    single slip fits, look for one usual slip made in several layers alike (``_Repeated``). While the student's
    kernel records, a failure says only which gradient is wrong: the grader's replay makes the message."""
    results = [exercise.compare_case(label, inputs, got, expected if isinstance(expected, dict)
                                     else {exercise.names[0]: expected}) for label, inputs, got, expected in runs]
    failing = [r for r in results if not r.ok]
    if failing:
        first = next(i for i, r in enumerate(results) if r is V.informative_case(failing))
        runs = [runs[first]] + runs[:first] + runs[first + 1:]
        t = trial.current()
        if t is not None and t.mode == "record":  # nobody reads it: the verdict comes from the replay
            name = next(n for n in exercise.names if not results[first].comparisons[n].ok)
            common.fail(f"{name} is wrong ({results[first].label}).", kind="values", gradient=name)
    once = _Once(exercise, repeated, quick=not _drawing())

    def draw(result, found):
        if isinstance(found, _Repeated):
            return found.trace(result)
        return formula_trace(exercise, result, found)

    try:
        judge(once, runs, strict, trace=draw if _drawing() else None, where=where and _drawing())
    except common.CheckFailure as failure:
        text = str(failure)
        if isinstance(once.found, _Repeated):  # the other layers have the same slip, not another one
            text = text.replace(" is wrong for another reason as well", " has the same slip")
            text = text.replace(" are wrong for another reason as well", " have the same slip")
        if text == str(failure) and " (not given)" not in text:
            raise
        # the line placing the mistake names steps inside the student's function as steps, not as missing answers
        common.fail(text.replace(" (not given)", ""), kind=failure.kind, gradient=failure.gradient,
                    figure=failure.figure)


class _Once(V.Exercise):
    """The same exercise, its diagnosis of one list of results computed once (judge asks twice); with ``repeated``,
    a slip made alike in several layers where no single slip fits; ``quick``: none at all (for a failure of which
    only the first line is read, or only that it failed: the values alone speak)."""

    def __init__(self, exercise, repeated=False, quick=False):
        super().__init__(exercise.graph, exercise.wrt, name=exercise.names, select=exercise.select, atol=exercise.atol)
        self.repeated, self.quick = repeated, quick
        self._memo = None

    @property
    def found(self):
        return self._memo[1] if self._memo is not None else None

    def diagnose(self, results, answer=None):
        if self.quick:
            return V.Diagnosis(None, "", False)
        if self._memo is None or self._memo[0] is not results or answer is not None:
            found = super().diagnose(results, answer)
            if self.repeated and not found.named and not found.evidence.startswith("several"):
                found = _repeated_slip(self, results) or found
            self._memo = (results, found)
        return self._memo[1]


# --------------------------------------------------------------------------- one slip in several layers
class _Repeated(V.Diagnosis):
    """A usual slip made alike at several operations of one kind (``ops``, from the loss down) with ``slot`` (the
    input's position, the kind, its count among that op's variants of that kind)."""

    def __init__(self, kind, sentence, first, ops, slot, exercise):
        super().__init__(kind, sentence, True, op=first, evidence="fits", key=f"repeated/{slot}")
        self.ops, self.slot, self.exercise = ops, slot, exercise

    def trace(self, result):
        """The backward pass of one case: the first slipped gradient, the same slip below it, what follows."""
        graph = self.exercise.graph
        given = {w: result.got[n] for n, w in zip(self.exercise.names, self.exercise.wrt)}
        bare = V.locate(graph, result.inputs)  # the nodes and edges only
        values = graph.forward(result.inputs)
        right, _ = graph.backward(values)
        slipped, _ = _slipped_pass(graph, values, {op.index: self.slot for op in self.ops})
        at = [op.inputs[self.slot[0]] for op in self.ops]
        nodes = []
        for node in bare.nodes:
            t, known = node.name, node.name in given or node.name == graph.root
            label = graph.names.show(t) if t == graph.root else graph.names.grad(t) + ("" if known else " (not given)")
            moved = t in slipped and t in right and not compare("", slipped[t], right[t]).ok
            if t == at[0]:
                status, note = "wrong", self.sentence
            elif t in at:
                status, note = "also wrong", f"the same slip as at {graph.names.grad(at[0])}."
            else:
                status, note = ("consequence" if moved else "right" if known else "unknown"), ""
            nodes.append(V.TraceNode(t, label, status, note, known))
        traced = V.Trace(nodes, bare.edges, at[0], self)
        traced.title = f"the backward pass of {', '.join(self.exercise.names)} ({result.label.split(';')[0]})"
        return traced


def _slots(op, values, g, local, names):
    """{(input position, kind, count): Variant}: one op's usual wrong local gradients that are plain values."""
    out, seen = {}, {}
    for v in op.variants(values, g, local, names):
        if v.value is None or v.basis is not None or v.input not in local or v.value.shape != local[v.input].shape:
            continue
        key = (op.inputs.index(v.input), v.kind)
        seen[key] = seen.get(key, 0) + 1
        out[(*key, seen[key])] = v
    return out


def _slipped_pass(graph, values, slips):
    """(every gradient of the backward pass with each op in ``slips`` ({op index: slot}) taking that usual wrong
    local gradient for whatever upstream gradient reaches it, whether each slip changed its op's local gradient);
    (None, None) where an op has no such slot."""
    grads, changed = {graph.root: torch.ones_like(values[graph.root])}, {}
    for op in reversed(graph.ops):
        g = grads.get(op.out)
        if g is None:
            continue
        local = op.vjp(values, g)
        if op.index in slips:
            variant = _slots(op, values, g, local, graph.names).get(slips[op.index])
            if variant is None:
                return None, None
            changed[op.index] = not compare("", variant.value, local[variant.input]).ok
            local[variant.input] = variant.value
        for name, d in local.items():
            grads[name] = grads[name] + d if name in grads else d
    return grads, changed


def _repeated_slip(exercise, results):
    """A _Repeated diagnosis when exactly one kind of usual slip, made at two or more operations of one type (the
    ReLU layers, or the linear layers, of a network), fits every case tried, and every one of those slips matters;
    else None."""
    import itertools

    graph = exercise.graph
    usable = [r for r in results if all(isinstance(r.got.get(n), torch.Tensor)
                                        and tuple(r.got[n].shape) == tuple(r.expected[n].shape) for n in exercise.names)]
    if len(usable) < len(results) or all(r.ok for r in usable):
        return None
    shown = V.informative_case([r for r in usable if not r.ok])
    candidates = []
    values = graph.forward(shown.inputs)
    _, upstream = graph.backward(values)
    for kind_of_op in {type(op) for op in graph.ops}:
        ops = [op for op in reversed(graph.ops) if type(op) is kind_of_op and op.index in upstream]
        for size in range(len(ops), 1, -1):
            for subset in itertools.combinations(ops, size):
                common_slots = None
                for op in subset:
                    g = upstream[op.index]
                    slots = {slot for slot in _slots(op, values, g, op.vjp(values, g), graph.names)
                             if op.inputs[slot[0]] not in graph.data}  # a slip in the images' gradient matters nowhere
                    common_slots = slots if common_slots is None else common_slots & slots
                candidates += [(subset, slot) for slot in sorted(common_slots or ())]
    fitting, matters = [], {}
    for subset, slot in candidates:
        if all(_slip_fits(exercise, r, subset, slot, matters) for r in [shown] + [r for r in usable if r is not shown]):
            if all(matters.get((subset, slot, op.index)) for op in subset):
                fitting.append((subset, slot))
    if len({slot[1] for _, slot in fitting}) != 1:
        return None
    subset, slot = fitting[0]
    values = graph.forward(shown.inputs)
    _, upstream = graph.backward(values)
    first = subset[0]
    g = upstream[first.index]
    variant = _slots(first, values, g, first.vjp(values, g), graph.names)[slot]
    others = [graph.names.grad(op.inputs[slot[0]]) for op in subset[1:]]
    sentence = f"{variant.sentence()} The same slip is at {', '.join(others)}: fix it there too."
    return _Repeated(variant.kind, sentence, variant.input, subset, slot, exercise)


def _slip_fits(exercise, result, subset, slot, matters):
    """Whether the slip at every op of ``subset`` gives the student's answer on this case (and note which slips
    change their op's local gradient here)."""
    values = exercise.graph.forward(result.inputs)
    slipped, changed = _slipped_pass(exercise.graph, values, {op.index: slot for op in subset})
    if slipped is None:
        return False
    for op in subset:
        matters[(subset, slot, op.index)] = matters.get((subset, slot, op.index), False) or changed[op.index]
    for name, w in zip(exercise.names, exercise.wrt):
        got = result.got[name]
        if not compare(name, got, exercise.select(slipped[w]).to(got.dtype)).ok:
            return False
    return True


# --------------------------------------------------------------------------- the grader's own network
def _network(params, x):
    """The reference forward pass (linear → ReLU → linear → ReLU → linear) with torch's own functions."""
    h = F.relu(F.linear(x, params["W1"].T, params["b1"]))
    h = F.relu(F.linear(h, params["W2"].T, params["b2"]))
    return F.linear(h, params["W3"].T, params["b3"])


def _random_params(gen, sizes, dtype, device):
    params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = common.randn(gen, d_in, d_out, dtype=dtype, device=device, scale=d_in**-0.5)
        params[f"b{i}"] = common.randn(gen, d_out, dtype=dtype, device=device, scale=0.1)
    return params


def _sizes(n):
    """Layer widths that change with the case, so nothing tied to 784-128-64-10 passes by accident."""
    return (6 + n % 9, 9 + n % 4, 5 + n % 6, 3 + n % 5)


def _labels(gen, n, classes, device):
    return torch.randint(classes, (n,), generator=gen).to(device)


def _clones(tensors):
    return {k: v.detach().clone() for k, v in tensors.items()}


def _network_grads(params, x, dlogits):
    """d(sum(logits · dlogits))/d(parameter) for every parameter: the backward pass for upstream ``dlogits``."""
    grads = autograd_grads(lambda *ps: (_network(dict(zip(NAMES, ps)), x) * dlogits).sum(), *(params[k] for k in NAMES))
    return dict(zip(NAMES, grads))


def _torch_sgd(params, grads, velocity, lr, momentum):
    """(new params, new velocity) after one step of torch.optim.SGD with momentum, on copies.

    torch keeps no velocity when momentum is 0; the velocity the exercise defines is then the gradient, which
    torch's momentum buffer also gives for momentum 1 from a zero velocity.
    """
    new_p, new_v = {}, {}
    for k in params:
        p = params[k].detach().clone()
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
        p.grad = grads[k].detach().clone()
        if momentum:
            opt.state[p]["momentum_buffer"] = velocity[k].detach().clone()
        opt.step()
        if momentum:
            v = opt.state[p]["momentum_buffer"]
        else:
            v = torch.zeros_like(p)
            only_v = torch.optim.SGD([v], lr=0.0, momentum=1.0)
            v.grad = grads[k].detach().clone()
            only_v.state[v]["momentum_buffer"] = torch.zeros_like(v)
            only_v.step()
            v = only_v.state[v]["momentum_buffer"]
        p.grad = None
        new_p[k], new_v[k] = p, v.detach().clone()
    return new_p, new_v


# --------------------------------------------------------------------------- small helpers for messages
def _pair(result, name, what, case):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        common.fail(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).",
                    kind="not a pair")
    return result


def _grads_dict(grads, name, keys, case):
    if not isinstance(grads, dict):
        common.fail(f"`{name}` should return a dict with the keys {', '.join(keys)}, but returned "
                    f"{type(grads).__name__} ({case}).", kind="type")
    missing = [k for k in keys if k not in grads]
    if missing:
        common.fail(f"`{name}` should return a dict with the keys {', '.join(keys)}; missing: {', '.join(missing)} "
                    f"({case}).", kind="missing key", gradient=missing[0])
    return grads


def _with_hint(run, hint):
    """Run ``run()``; if it fails, fail again with ``hint()`` (a sentence or None) added to the message."""
    try:
        return run()
    except common.CheckFailure as err:
        extra = hint()
        if not extra:
            raise
        common.fail(f"{err}\n  {extra}", kind=getattr(err, "kind", None), gradient=getattr(err, "gradient", None))


def _same_values(got, other):
    """Whether a returned tensor holds ``other``'s values (to recognise a known mistake); False if not comparable."""
    if not isinstance(got, torch.Tensor) or got.shape != other.shape:
        return False
    g, o = got.detach().to("cpu", torch.float64), other.detach().to("cpu", torch.float64)
    scale = float(o.abs().max()) if o.numel() else 1.0
    return bool(torch.allclose(g, o, rtol=1e-4, atol=1e-6 * max(scale, 1e-12)))


# --------------------------------------------------------------------------- the grader's helpers
def _leaves(value, depth=0):
    """ids of the tensors in a cache (through tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        return {id(value)}
    out = set()
    if depth < 4 and isinstance(value, (tuple, list)):
        for v in value:
            out |= _leaves(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            out |= _leaves(v, depth + 1)
    return out


def _own_object(cache):
    """Whether a cache is an object of its own that identity can find again (not None, a number, an empty tuple)."""
    return isinstance(cache, torch.Tensor) or isinstance(cache, (tuple, list, dict)) and len(cache) > 0


@contextlib.contextmanager
def _reference_mode():
    """Autograd on, whatever the student's code around the call switched off."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class _GraderHelpers:
    """The grader's versions of the lesson's helpers, for one run of a composite exercise.

    A forward helper remembers the inputs it was called with (copies), under the cache object it returns; the
    matching backward helper finds them again by that object's identity (or, if the student's code rebuilt the
    cache, by the identity of the tensors in it) and asks autograd. A layer forward returns the student's own
    cache object when the student's forward helper makes one, so a composite that reads a cache itself (the
    first layer's shortcut in backward) keeps working.
    """

    KEEP = 64

    def __init__(self, student):
        self.student = student  # the student's own helpers, by name (none in replay)
        self.entries = []  # (kind, cache object, leaf ids, inputs)

    # ---- memory of forward calls
    def _remember(self, kind, cache, inputs):
        self.entries.append((kind, cache, _leaves(cache), inputs))
        del self.entries[:-self.KEEP]

    def _recall(self, kind, cache, helper):
        for k, c, _, inputs in reversed(self.entries):
            if k == kind and c is cache:
                return inputs
        leaves = _leaves(cache)
        for k, _, known, inputs in reversed(self.entries):
            if k == kind and leaves and leaves <= known:
                return inputs
        raise LookupError(f"the grader's {helper} was given a cache that no call of its forward returned: pass "
                          "each layer's cache from the forward pass to its backward unchanged")

    def _student_cache(self, name, args, fallback):
        fn = self.student.get(name)
        if callable(fn):
            try:
                result = fn(*(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
            except Exception:  # the student's helper is broken: its own cell says so; use the grader's cache
                result = None
            if isinstance(result, (tuple, list)) and len(result) == 2 and _own_object(result[1]):
                return result[1]
        return fallback

    # ---- layers
    def linear_forward(self, x, W, b):
        out = F.linear(x.detach(), W.detach().T, b.detach())
        cache = self._student_cache("linear_forward", (x, W, b), (x, W))
        self._remember("linear", cache, (x.detach().clone(), W.detach().clone(), b.detach().clone()))
        return out, cache

    def linear_backward(self, dout, cache):
        x, W, b = self._recall("linear", cache, "linear_backward")
        with _reference_mode():
            dout = dout.detach().clone()
            return autograd_grads(lambda x_, W_, b_: (F.linear(x_, W_.T, b_) * dout).sum(), x, W, b)

    def relu_forward(self, x):
        out = F.relu(x.detach())
        cache = self._student_cache("relu_forward", (x,), x)
        self._remember("relu", cache, x.detach().clone())
        return out, cache

    def relu_backward(self, dout, cache):
        x = self._recall("relu", cache, "relu_backward")
        with _reference_mode():
            dout = dout.detach().clone()
            return autograd_grads(lambda x_: (F.relu(x_) * dout).sum(), x)[0]

    # ---- loss
    def log_softmax_backward(self, dlogp, logp):
        with _reference_mode():
            dlogp = dlogp.detach().clone()
            return autograd_grads(lambda z: (F.log_softmax(z, dim=1) * dlogp).sum(), logp)[0]

    def softmax_cross_entropy(self, logits, labels):
        with _reference_mode():
            labels = labels.clone()
            (dlogits,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
        return F.cross_entropy(logits.detach(), labels), dlogits

    # ---- network
    def forward(self, params, X):
        frozen = (_clones({k: params[k] for k in NAMES}), X.detach().clone())
        caches = ["the grader's caches"]  # a fresh object: backward finds the inputs by its identity
        self._remember("network", caches, frozen)
        return _network({k: params[k].detach() for k in NAMES}, X.detach()), caches

    def backward(self, dlogits, caches):
        params, X = self._recall("network", caches, "backward")
        with _reference_mode():
            return _network_grads(params, X, dlogits.detach().clone())

    def sgd_step(self, params, grads, velocity, lr, momentum):
        for k in params:
            new_p, new_v = _torch_sgd({k: params[k]}, {k: grads[k]}, {k: velocity[k]}, lr, momentum)
            with torch.no_grad():
                params[k].copy_(new_p[k])
                velocity[k].copy_(new_v[k])


@contextlib.contextmanager
def _grader_helpers(composites, names):
    """Put the grader's helpers ``names`` in place of the student's, in the namespace of every composite."""
    student = {}
    for fn in composites:
        namespace = getattr(fn, "__globals__", None)
        if isinstance(namespace, dict):
            for name in names:
                if name in namespace and name not in student:
                    student[name] = namespace[name]
    helpers = _GraderHelpers(student)
    chosen = {name: getattr(helpers, name) for name in names}
    with contextlib.ExitStack() as stack:
        seen = set()
        for fn in composites:
            key = id(getattr(fn, "__globals__", None))
            if key not in seen:
                seen.add(key)
                stack.enter_context(common.reference_helpers(fn, chosen))
        yield helpers


# --------------------------------------------------------------------------- grading a composite
def _outcomes():
    t = trial.current()
    return t.outcomes if t is not None else []


def _listing(names):
    names = [f"`{n}`" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _composite(name, composites, helpers, attempt, culprits, quiet, shown=None, passed=None, explain=None):
    """Grade ``attempt()`` (one full try of the composite ``name``) with the student's helpers, then, if that
    fails, with the grader's ``helpers`` in their place. A pass the second way passes, with a note naming the
    helpers to fix (``culprits()``: the names of the helpers whose own checks fail). ``shown``: how the messages
    name the replaced helpers; ``passed``: how the note starts; ``explain()``: a sentence for the note saying where
    the student's helpers go wrong ("" for none)."""
    shown = shown or _listing(helpers)
    passed = passed or f"`{name}` is right, but it passed only"
    outcomes = _outcomes()
    mark = len(outcomes)
    try:
        with _without_drawing():  # only its first line is ever shown (in the note)
            attempt()
        return
    except AssertionError as err:
        own = err
    del outcomes[mark:]  # the class report keeps what the composite itself got right or wrong
    with _grader_helpers(composites, helpers):
        try:
            attempt()
        except AssertionError as err:
            kind = getattr(err, "kind", None)
            if kind in ("not written", "not a function"):
                raise
            common.fail(f"{err}\n  The grader ran `{name}` again with its own {shown} in place of yours, "
                        f"and it is still wrong: the mistake is in `{name}` itself.",
                        kind=kind, gradient=getattr(err, "gradient", None), figure=getattr(err, "figure", None))
    if quiet:
        return
    mark = len(outcomes)
    with _without_drawing():
        wrong = culprits()
    where = explain() if explain is not None else ""
    del outcomes[mark:]
    first_line = str(own).splitlines()[0] if str(own) else type(own).__name__
    first_line = first_line if first_line.endswith((".", "?", ")")) else first_line + "."
    if wrong:
        advice = (f"Fix {_listing(wrong)}: {'its' if len(wrong) == 1 else 'their'} own test "
                  f"cell{'' if len(wrong) == 1 else 's'} say{'s' if len(wrong) == 1 else ''} what is wrong.")
    else:
        advice = ("Each of them passes its own test, so look at how they work together (for example a cache that "
                  "one of them changes in place and another reads later).")
    common.note(f"{passed} with the grader's {shown} in place of yours. "
                f"With your own: {first_line} {advice}" + (f" {where}" if where else ""))


def _student_fn(composites, name):
    for fn in composites:
        namespace = getattr(fn, "__globals__", None)
        if isinstance(namespace, dict):
            return namespace.get(name)
    return None


def _failing(composites, names):
    """The helpers among ``names`` that fail their own checks (quietly: no notes, as the cells grade them)."""
    verifiers = {
        "linear_forward": lambda f: _verify_linear_forward(f("linear_forward")),
        "linear_backward": lambda f: _verify_linear_backward(f("linear_forward"), f("linear_backward")),
        "relu_forward": lambda f: _verify_relu_forward(f("relu_forward")),
        "relu_backward": lambda f: _verify_relu_backward(f("relu_forward"), f("relu_backward")),
        "log_softmax_backward": lambda f: _verify_log_softmax_backward(f("log_softmax_backward")),
        "softmax_cross_entropy": lambda f: _verify_softmax_cross_entropy(f("softmax_cross_entropy"), quiet=True),
        "forward": lambda f: _verify_forward(f("forward"), quiet=True),
        "backward": lambda f: _verify_backward(f("forward"), f("backward"), quiet=True),
        "sgd_step": lambda f: _verify_sgd_step(f("sgd_step")),
    }
    wrong = []
    for name in names:
        try:
            verifiers[name](lambda n: _student_fn(composites, n))
        except AssertionError:
            wrong.append(name)
    return wrong


# notebook order, for the culprits named in a note
_ORDER = ("linear_forward", "linear_backward", "relu_forward", "relu_backward", "log_softmax_backward",
          "softmax_cross_entropy", "forward", "backward", "sgd_step")


def _culprits(composites, names):
    return lambda: _failing(composites, [n for n in _ORDER if n in names])


# --------------------------------------------------------------------------- layers
def _linear_inputs(gen, n, dtype, device):
    d_in, d_out = 3 + n % 5, 2 + n % 4
    x = common.randn(gen, n, d_in, dtype=dtype, device=device)
    W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
    b = common.randn(gen, d_out, dtype=dtype, device=device)
    return x, W, b, d_out


def _verify_linear_forward(linear_forward):
    for label, gen, n, dtype, device in common.cases(701):
        x, W, b, _ = _linear_inputs(gen, n, dtype, device)
        expected = F.linear(x, W.T, b)
        out, _ = _pair(common.call_student(linear_forward, "linear_forward", x, W, b, case=label),
                       "linear_forward", "out, cache", label)
        common.check_tensor("linear_forward output", out, expected, label, derivative=False)


@common.graded
def check_linear_forward(linear_forward):
    """out = x W + b, in the inputs' dtype and on their device."""
    _verify_linear_forward(linear_forward)


def _verify_linear_backward(linear_forward, linear_backward):
    runs = []
    for label, gen, n, dtype, device in common.cases(702):
        x, W, b, d_out = _linear_inputs(gen, n, dtype, device)
        dout = common.randn(gen, n, d_out, dtype=dtype, device=device)
        expected = autograd_grads(lambda x_, W_, b_: (F.linear(x_, W_.T, b_) * dout).sum(), x, W, b)
        # Only the cache matters here: a slip in linear_forward's output costs linear_forward's cell.
        _, cache = _pair(common.call_student(linear_forward, "linear_forward", x, W, b, case=label),
                         "linear_forward", "out, cache", label)
        got = common.call_student(linear_backward, "linear_backward", dout, cache, case=label)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            common.fail(f"`linear_backward` should return (dx, dW, db), but returned {type(got).__name__} ({label}).",
                        kind="not a triple")
        runs.append((label, {"x": x, "W": W, "b": b, "dout": dout}, got, dict(zip(LINEAR.names, expected))))

    def strict(label, got, expected):
        for name, g in zip(LINEAR.names, got):
            common.check_tensor(name, g, expected[name], label)

    _grade(LINEAR, runs, strict)


@common.graded
def check_linear_backward(linear_forward, linear_backward):
    """(dx, dW, db) for an arbitrary upstream gradient, from the cache of the student's own linear_forward."""
    _verify_linear_backward(linear_forward, linear_backward)


def _relu_input(gen, n, dtype, device):
    """Random values with exact zeros (and a negative zero) among them: ReLU's kink is part of the test."""
    x = common.randn(gen, n, 5, dtype=dtype, device=device)
    flat = x.view(-1)
    flat[::3] = 0.0
    flat[1::7] = -0.0
    return x


def _verify_relu_forward(relu_forward):
    for label, gen, n, dtype, device in common.cases(703):
        x = _relu_input(gen, n, dtype, device)
        expected = F.relu(x)
        out, _ = _pair(common.call_student(relu_forward, "relu_forward", x, case=label), "relu_forward",
                       "out, cache", label)
        common.check_tensor("relu_forward output", out, expected, label, derivative=False)


@common.graded
def check_relu_forward(relu_forward):
    """max(x, 0) elementwise, exact zeros in the input included."""
    _verify_relu_forward(relu_forward)


def _verify_relu_backward(relu_forward, relu_backward):
    runs = []
    for label, gen, n, dtype, device in common.cases(704):
        x = _relu_input(gen, n, dtype, device)
        dout = common.randn(gen, n, 5, dtype=dtype, device=device)
        (expected,) = autograd_grads(lambda x_: (F.relu(x_) * dout).sum(), x)
        _, cache = _pair(common.call_student(relu_forward, "relu_forward", x, case=label), "relu_forward",
                         "out, cache", label)
        got = common.call_student(relu_backward, "relu_backward", dout, cache, case=label)
        runs.append((label, {"x": x, "dout": dout}, got, expected))
    for label, _, got, _ in runs:  # the mask alone (the cache out > 0 returned as it is): say so, before any values
        message, kind = mask_message(got, label)
        if message:
            common.fail(message, kind=kind, gradient="dx")
    _only_at_zero(runs)
    _grade(RELU, runs, lambda label, got, expected: common.check_tensor("dx", got, expected, label))


def _only_at_zero(runs):
    """A dx that is wrong only where x is exactly 0, in every case that fails, and not the usual x >= 0 (which the
    diagnosis names): say that ReLU's slope at 0 is taken as 0."""
    failing, shown = [], None
    for label, inputs, got, expected in runs:
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return
        off = got.detach().to(expected.device, expected.dtype) != expected
        if not off.any():
            continue
        at_zero = inputs["x"] == 0
        passed = torch.where(at_zero, inputs["dout"], expected)
        if (off & ~at_zero).any() or _same_values(got, passed):
            return
        failing.append(label)
        if shown is None or off.sum() > shown[0]:
            shown = (int(off.sum()), label, got, expected)
    if not failing:
        return
    _, label, got, expected = shown
    details = _plain("dx", got, expected, label)[0][1:]
    fail_with_trace("\n".join([f"dx is wrong ({label}): it is wrong only where x is exactly 0 (in all {len(failing)} "
                               f"cases that fail). At 0 ReLU's gradient is taken as 0, as torch does and as the "
                               f"docstring says. Fix: dx = dout where x > 0, and 0 elsewhere, at x = 0 too.", *details]),
                    "mask_at_zero", "dx", None, label)


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    """dout where the input was positive, 0 elsewhere (at exactly 0 too), from the student's own relu_forward cache."""
    _verify_relu_backward(relu_forward, relu_backward)


# --------------------------------------------------------------------------- the loss
def _logits(gen, n, c, dtype, device, spread):
    """Random logits; ``spread`` "rows far apart" adds ±400 to alternate rows, so that only a shift by each
    row's own maximum keeps every row finite; "large" adds 500 to all."""
    z = common.randn(gen, n, c, dtype=dtype, device=device, scale=3.0)
    if spread == "large":
        z = z + 500.0
    elif spread == "rows far apart":
        offsets = torch.where(torch.arange(n) % 2 == 0, 400.0, -400.0).to(dtype=dtype, device=device)
        z = z + offsets[:, None]
    return z


_SPREADS = (("", ""), ("large", ", every logit near +500"), ("rows far apart", ", rows near +400 and -400"))


def _verify_log_softmax_backward(log_softmax_backward):
    runs = []
    for label, gen, n, dtype, device in common.cases(710):
        for spread, what in _SPREADS:
            c = 3 + n % 8
            case = label + what
            logp = F.log_softmax(_logits(gen, n, c, dtype, device, spread), dim=1)
            dlogp = common.randn(gen, n, c, dtype=dtype, device=device)
            (expected,) = autograd_grads(lambda z: (F.log_softmax(z, dim=1) * dlogp).sum(), logp)
            got = common.call_student(log_softmax_backward, "log_softmax_backward", dlogp, logp, case=case)
            # log_softmax(logp) = logp: the declared computation starts from logp as its input z
            runs.append((case, {"z": logp, "dlogp": dlogp}, got, expected))
    _grade(LOG_SOFTMAX, runs, lambda label, got, expected: common.check_tensor("dz", got, expected, label))


@common.graded
def check_log_softmax_backward(log_softmax_backward):
    """dL/dz from dL/dlogp and logp = log_softmax(z), for an arbitrary upstream gradient, against autograd."""
    _verify_log_softmax_backward(log_softmax_backward)


def _verify_softmax_cross_entropy(softmax_cross_entropy, quiet=False):
    def attempt():
        runs = []
        for label, gen, n, dtype, device in common.cases(705):
            for spread, what in _SPREADS:
                c = 3 + n % 8
                case = label + what
                logits = _logits(gen, n, c, dtype, device, spread)
                labels = _labels(gen, n, c, device)
                expected_loss = F.cross_entropy(logits, labels)
                (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
                loss, dlogits = _pair(common.call_student(softmax_cross_entropy, "softmax_cross_entropy", logits,
                                                          labels, case=case),
                                      "softmax_cross_entropy", "loss, dlogits", case)

                def loss_hint():
                    if n > 1 and _same_values(loss, expected_loss * n):
                        return "That is the sum over the rows: the loss is the mean over the B rows."
                    return _overflow_hint(loss)

                _with_hint(lambda: common.check_tensor("loss", loss, expected_loss, case, atol=_loss_atol(logits),
                                                   derivative=False, batch=n),
                           loss_hint)
                runs.append((case, {"logits": logits, "labels": labels}, dlogits, expected))

        def strict(label, got, expected):
            atol = LOSS.atol_for(next(inputs for case, inputs, _, _ in runs if case == label), got, expected)
            _with_hint(lambda: common.check_tensor("dlogits", got, expected, label, atol=atol),
                       lambda: _overflow_hint(got))

        _grade(LOSS, runs, strict)

    _composite("softmax_cross_entropy", [softmax_cross_entropy], ("log_softmax_backward",), attempt,
               _culprits([softmax_cross_entropy], ("log_softmax_backward",)), quiet)


def _loss_atol(logits):
    """The loss's absolute tolerance. A row's loss is a difference of numbers the size of its logits: its rounding
    follows the size of the logits, not of the loss (near +400 a float32 loss of 0.04 carries 1e-5 of rounding, 3e-4
    of itself). Measured on this check's cases, log_softmax, torch.logsumexp and a log-sum-exp by hand around the row's
    maximum stay within 2 eps · max |logits| of F.cross_entropy; 8 leaves a margin, while a sum for the mean, a sign
    or inf/NaN still fail."""
    return 8 * torch.finfo(logits.dtype).eps * float(logits.abs().max())


def _dlogits_atol(logits):
    """dlogits' absolute tolerance: a probability made from a log-probability carries its rounding (``_loss_atol``)
    times itself (at most 1), and dlogits divides it by B. Measured as for the loss: within 0.6 eps · max |logits| / B."""
    return _loss_atol(logits) / max(len(logits), 1)


def _overflow_hint(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
        return ("Subtract each row's own maximum (logits.max(dim=1, keepdim=True)) before exp: one maximum for the "
                "whole batch still overflows or underflows when rows are far apart.")
    return None


@common.graded
def check_softmax_cross_entropy(softmax_cross_entropy):
    """(loss, dlogits): the mean cross-entropy and its gradient, for logits near 0, near +500, and rows far apart."""
    _verify_softmax_cross_entropy(softmax_cross_entropy)


# --------------------------------------------------------------------------- the network
def _verify_forward(forward, quiet=False):
    def attempt():
        for label, gen, n, dtype, device in common.cases(706):
            sizes = _sizes(n)
            case = f"{label}, sizes {sizes}"
            params = _random_params(gen, sizes, dtype, device)
            x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
            expected = _network(params, x)
            logits, _ = _pair(common.call_student(forward, "forward", params, x, case=case), "forward",
                              "logits, caches", case)
            common.check_tensor("forward output", logits, expected, case, derivative=False)

    _composite("forward", [forward], ("linear_forward", "relu_forward"), attempt,
               _culprits([forward], ("linear_forward", "relu_forward")), quiet)


@common.graded
def check_forward(forward):
    """The logits of linear → ReLU → linear → ReLU → linear, for layer sizes that change with the case."""
    _verify_forward(forward)


def _verify_backward(forward, backward, quiet=False):
    largest = []

    def attempt():
        runs = []
        for label, gen, n, dtype, device in common.cases(707):
            sizes = _sizes(n)
            case = f"{label}, sizes {sizes}"
            params = _random_params(gen, sizes, dtype, device)
            x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
            dlogits = common.randn(gen, n, sizes[-1], dtype=dtype, device=device)
            expected_logits = _network(params, x)
            expected = _network_grads(params, x, dlogits)
            logits, caches = _pair(common.call_student(forward, "forward", params, x, case=case), "forward",
                                   "logits, caches", case)
            try:
                common.check_tensor("forward output", logits, expected_logits, case, derivative=False)
            except common.CheckFailure as err:
                common.fail(f"`backward` could not be checked ({case}): it starts from the caches of `forward`, and "
                            f"forward's logits are wrong. Fix forward first (its own test cell says what is wrong).\n"
                            f"  {str(err).splitlines()[0]}", kind="forward wrong", gradient="forward output")
            grads = common.call_student(backward, "backward", dlogits, caches, case=case)
            _grads_dict(grads, "backward", NAMES, case)
            runs.append((case, {"X": x, **params, "dlogits": dlogits}, {f"d{k}": grads[k] for k in BACKPROP_ORDER},
                         {f"d{k}": expected[k] for k in BACKPROP_ORDER}))
        largest[:] = [max(runs, key=lambda run: run[1]["X"].numel())]

        def strict(label, got, expected):
            for name in BACKWARD.names:
                common.check_tensor(name, got[name], expected[name], label)

        _grade(BACKWARD, runs, strict, where=True, repeated=True)

    composites = [forward, backward]
    _composite("backward", composites, LAYER_HELPERS, attempt, _culprits(composites, LAYER_HELPERS), quiet,
               explain=lambda: _layers_in_the_network(composites, *largest[0][:2]))


class _HelperFailed(Exception):
    """A student's layer function that failed inside the network's trace (raised, used autograd, ...)."""


def _through_call_student(composites, name, case):
    """The student's function ``name`` for ``V.layer_helpers``, every call through common.call_student."""
    fn = _student_fn(composites, name)

    def call(*args):
        try:
            return common.call_student(fn, name, *args, case=case)
        except AssertionError as failure:
            raise _HelperFailed(str(failure).splitlines()[0]) from None

    return call


def _layers_in_the_network(composites, case, inputs):
    """A sentence for the note after backward passed only with the grader's layer functions: the student's own layer
    functions in the network of one case, each called with the right upstream gradient and forward values
    (gradlab.variants.locate): the first wrong gradient, its likely slip, what follows from it. "" when they are right
    there."""
    functions = {name: _through_call_student(composites, name, case) for name in LAYER_HELPERS}
    traced = V.locate(NETWORK, inputs, helpers=V.layer_helpers(NETWORK, **functions))
    if traced.first is None:
        return ""
    helper = {V.Linear: "linear_backward", V.ReLU: "relu_backward"}.get(type(NETWORK.consumers(traced.first)[0]))
    text = " ".join(traced.explain().splitlines()).replace(f"the local backward raised {_HelperFailed.__name__}: ", "")
    label = NETWORK.names.grad(traced.first)
    text = text.replace(f"is {label}:", f"is {label} (from your {helper}):", 1) if helper else text
    return f"Your layer functions in the network, each given the right upstream gradient ({case}): {text}"


@common.graded
def check_backward(forward, backward):
    """Every parameter gradient of the whole network, for an arbitrary upstream gradient of the logits."""
    _verify_backward(forward, backward)


# --------------------------------------------------------------------------- the update
def _verify_sgd_step(sgd_step):
    for label, gen, n, dtype, device in common.cases(708, sizes=(1, 7)):
        for momentum in (0.9, 0.0):
            lr = 0.05
            case = f"{label}, lr={lr}, momentum={momentum}"
            params = _random_params(gen, _sizes(n), dtype, device)
            grads = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            velocity = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            new_p, new_v = _torch_sgd(params, grads, velocity, lr, momentum)
            # what two known mistakes would give: a step with the old velocity, and a step without momentum
            old_v_step, _ = _torch_sgd(params, velocity, velocity, lr, 0.0)
            plain_step, _ = _torch_sgd(params, grads, velocity, lr, 0.0)
            ema = {k: torch.lerp(velocity[k], grads[k], 1 - momentum) for k in params}  # the average m·v + (1 − m)·g
            uphill = {k: 2 * params[k] - new_p[k] for k in params}  # the same step, taken the other way
            originals = dict(params)
            common.call_student(sgd_step, "sgd_step", params, grads, velocity, lr, momentum, case=case, mutable=(0, 2))
            for k in BACKPROP_ORDER:
                if params.get(k) is not originals[k]:
                    common.fail(
                        f"`sgd_step` put a new object into params[{k!r}] ({case}). Update each parameter in place, as "
                        "the docstring asks (with an in-place method such as `add_`, or `-=`): the parameter tensors are shared "
                        "with whoever holds them. (The velocity may be updated in place or replaced.)",
                        kind="not in place", gradient=f"params[{k!r}]")
            for k in BACKPROP_ORDER:
                if k not in velocity:
                    common.fail(f"`sgd_step` removed velocity[{k!r}] ({case}).", kind="missing key")
                _with_hint(lambda k=k: common.check_tensor(f"velocity[{k!r}] after the step", velocity[k], new_v[k],
                                                           f"{case}; it should become momentum·velocity + grad",
                                                           derivative=False, batch=False),
                           lambda k=k: f"That is {_EMA}" if momentum and _same_values(velocity[k], ema[k]) else None)

                def hint(k=k):
                    if _same_values(params[k], old_v_step[k]):
                        return "That is a step with the velocity from before the update: update the velocity first."
                    if momentum and _same_values(params[k], plain_step[k]):
                        return "That is a step without momentum: step along the new velocity, not along the gradient."
                    if _same_values(params[k], uphill[k]):
                        return "That step goes uphill: the parameter moves against the velocity (minus lr times it)."
                    return None

                _with_hint(lambda k=k: common.check_tensor(f"params[{k!r}] after the step", params[k], new_p[k],
                                                           f"{case}; it should become param − lr·(the new velocity)",
                                                           derivative=False, batch=False),
                           hint)


@common.graded
def check_sgd_step(sgd_step):
    """One step of SGD with momentum, against torch.optim.SGD: parameters in place, the new velocity in the dict."""
    _verify_sgd_step(sgd_step)


_EMA = ("the exponential moving average v = m·v + (1 − m)·g. The lesson's momentum (and torch.optim.SGD's) is "
        "v = m·v + g, without the factor (1 − m) on the gradient.")


@common.graded
def check_momentum_weights(momentum_weights):
    """The weight of each past gradient in the velocity after ``steps`` steps, against torch.optim.SGD's buffer."""
    for steps in (5, 1, 2, 40):
        for momentum in (0.9, 0.5, 0.99, 0.0):
            case = f"steps={steps}, momentum={momentum}"
            expected = _velocity_weights_by_torch(steps, momentum)
            got = common.call_student(momentum_weights, "momentum_weights", steps, momentum, case=case)

            def hint():
                if steps > 1 and _same_values(got, expected.flip(0)):
                    return ("The order is reversed: entry s belongs to the gradient of step s + 1, and the newest "
                            "gradient (the last entry) has weight 1.")
                return None

            def check():  # weights, not a gradient, and no batch: a factor 1/10 here is 1 − 0.9, not a 1/N
                try:
                    common.check_tensor("momentum weights", got, expected, case, derivative=False, batch=False)
                except common.CheckFailure as err:
                    if not (momentum and _same_values(got, (1 - momentum) * expected)):
                        raise
                    lines = str(err).split("\n")
                    lines[0] = (f"momentum weights is wrong ({case}): every value is (1 − m) = {1 - momentum:g} × the "
                                f"expected one: that is {_EMA}")
                    common.fail("\n".join(lines), kind=err.kind, gradient=err.gradient)

            _with_hint(check, hint)


def _velocity_weights_by_torch(steps, momentum):
    """torch.optim.SGD on a vector whose gradient at step s is the s-th unit vector: with lr = 1 the last step
    moves the vector by minus the velocity, whose entry s is then the weight of step s's gradient."""
    p = torch.zeros(steps, dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=1.0, momentum=momentum)
    before = p.clone()
    for s in range(steps):
        before = p.detach().clone()
        p.grad = torch.eye(steps, dtype=torch.float64)[s]
        opt.step()
    return before - p.detach()


# --------------------------------------------------------------------------- the planted bug, fixed
def _all_gradients(params, x, y):
    """The loss's gradient with respect to every intermediate and parameter, by torch.autograd.grad."""
    with _reference_mode():
        ps = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        t = {"z1": F.linear(x, ps["W1"].T, ps["b1"])}
        t["a1"] = F.relu(t["z1"])
        t["z2"] = F.linear(t["a1"], ps["W2"].T, ps["b2"])
        t["a2"] = F.relu(t["z2"])
        t["z3"] = F.linear(t["a2"], ps["W3"].T, ps["b3"])
        loss = F.cross_entropy(t["z3"], y)
        sources = [t.get(k, ps.get(k)) for k in INTERMEDIATES]
        grads = torch.autograd.grad(loss, sources)
        values = {k: v.detach() for k, v in t.items()}
    return dict(zip(INTERMEDIATES, (g.detach() for g in grads))), values


def _upstream_grad_with(W, b, a, dz):
    """What the gradient of ``a`` would be if the layer a → a W + b had the weights W, b (autograd)."""
    with _reference_mode():
        return autograd_grads(lambda a_: (F.linear(a_, W.T, b) * dz).sum(), a)[0]


@common.graded
def check_backward_and_step(backward_and_step):
    """Every gradient at the parameters as they were on entry, then one plain SGD step in place.

    Every case first; then the first wrong gradient (from the loss down, in any case) is diagnosed on its own over
    every case (``STEP_NODE``), in the words of the lesson's table and of the other checks, and the backward pass is
    drawn with it marked: what is wrong only because of it, and what is wrong for another reason as well."""
    runs = []
    for label, gen, n, dtype, device in common.cases(711):
        lr = 0.1 if n % 2 else 0.3
        sizes = _sizes(n)
        case = f"{label}, sizes {sizes}, lr={lr}"
        params = _random_params(gen, sizes, dtype, device)
        if n > 1:  # a dead hidden unit: z1[:, 0] is exactly 0, where ReLU's slope is 0 (a mask z1 >= 0 shows there)
            params["W1"][:, 0] = 0.0
            params["b1"][0] = 0.0
        x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
        y = _labels(gen, n, sizes[-1], device)
        expected, values = _all_gradients(params, x, y)
        new_p, _ = _torch_sgd(params, {k: expected[k] for k in NAMES}, params, lr, 0.0)
        stale = {"a2": _upstream_grad_with(new_p["W3"], new_p["b3"], values["a2"], expected["z3"]),
                 "a1": _upstream_grad_with(new_p["W2"], new_p["b2"], values["a1"], expected["z2"])}
        inputs = {"X": x, "y": y, **_clones(params)}
        originals = dict(params)
        grads = common.call_student(backward_and_step, "backward_and_step", params, x, y, lr, case=case, mutable=(0,))
        _grads_dict(grads, "backward_and_step", INTERMEDIATES, case)
        runs.append(_StepRun(case, inputs, grads, expected, stale, params, originals, new_p))
    wrong = [k for k in STEP_ORDER if any(not compare("", run.got[k], run.expected[k]).ok for run in runs)]
    if wrong:
        _step_failure(wrong[0], runs)
    for run in runs:
        for k in INTERMEDIATES:  # the values are right: then the dtype and the device
            common.check_tensor(f"dL/d{k}", run.got[k], run.expected[k], run.case)
    for run in runs:
        for k in BACKPROP_ORDER:
            if run.params.get(k) is not run.originals[k]:
                common.fail(f"`backward_and_step` put a new object into params[{k!r}] ({run.case}); update the "
                            "parameters in place, as the docstring asks.", kind="not in place", gradient=f"params[{k!r}]")
            common.check_tensor(f"params[{k!r}] after the step", run.params[k], run.new_p[k], f"{run.case}; θ − lr·dθ")


class _StepRun:
    """One case of backward_and_step: its inputs (the parameters as they were on entry), the student's gradients and
    parameters after the call, and the grader's values."""

    def __init__(self, case, inputs, got, expected, stale, params, originals, new_p):
        self.case, self.inputs, self.got, self.expected, self.stale = case, inputs, got, expected, stale
        self.params, self.originals, self.new_p = params, originals, new_p


def _step_failure(key, runs):
    """Fail at ``key``, the first wrong gradient from the loss down (in any case; above it every case is right):
    the gradient computed with weights already updated where that fits every case that shows it, else the diagnosis
    of that gradient on its own over every case (lesson01.judge); with where it is in the backward pass and the
    pass drawn."""
    name = f"dL/d{key}"
    by_case = {run.case: run for run in runs}

    def drawn(label, note=None):
        if not _drawing():
            return None
        run = by_case[label.split(";")[0]]
        traced = trace(run.inputs["X"], run.inputs["y"], run.inputs, run.got,
                       title=f"the backward pass of backward_and_step ({run.case})")
        first = next((n for n in traced.nodes if n.status == "wrong"), None)
        if first is not None and first.name == key:
            # what the picture says of the first wrong gradient is what the message says: a slip that fits one case
            # alone is not named
            if note is not None:
                first.note = note
            elif traced.diagnosis is not None and traced.diagnosis.named:
                first.note = ""
        return traced

    def fail_here(label, got, expected, lines, kind, note=None):
        traced = drawn(label, note)
        where = where_line(traced) if traced is not None else ""
        details = _plain(name, got, expected, label)[0][1:]
        fail_with_trace("\n".join(lines + ([where] if where else []) + details), kind, name, traced, label)

    layer = {"a2": "3", "a1": "2"}.get(key)
    if layer:
        showing = [run for run in runs if not compare("", run.got[key], run.expected[key]).ok]
        if all(_same_values(run.got[key], run.stale[key]) for run in showing):
            run = max(showing, key=lambda r: r.expected[key].numel())
            tried = (f"the same on all {len(runs)} cases tried" if len(showing) == len(runs)
                     else f"it fits all {len(runs)} cases tried; {len(showing)} of them show it")
            slip = (f"it is the gradient computed with W{layer} and b{layer} after their update: the step changed "
                    f"W{layer} in place, and everything that refers to it (a variable, a cache) sees the new values. "
                    f"Fix: compute {name} before updating layer {layer}.")
            fail_here(run.case, run.got[key], run.expected[key], [f"{name} is wrong ({run.case}): {slip}",
                                                                  f"  ({tried})"], "stale weights", slip)

    def strict(label, got, expected):  # a shape, None, NaN, a constant factor: the comparison's own message
        lines, kind = _plain(name, got, expected, label)
        fail_here(label, got, expected, lines[:1], kind)

    judge(STEP_NODE[key], [(run.case, run.inputs, run.got[key], run.expected[key]) for run in _informative_first(
          STEP_NODE[key], key, runs)], strict,
          trace=lambda result, found: drawn(result.label, found.sentence if found is not None else None),
          where=_drawing())


def _informative_first(exercise, key, runs):
    results = [exercise.compare_case(run.case, run.inputs, run.got[key], {exercise.names[0]: run.expected[key]})
               for run in runs]
    failing = [r for r in results if not r.ok]
    best = next(i for i, r in enumerate(results) if r is V.informative_case(failing))
    return [runs[best]] + runs[:best] + runs[best + 1:]


def _plain(name, got, expected, case):
    """(the lines, the kind) of what the comparison alone says of one wrong gradient, as common.check_grad says it
    (without keeping an outcome: the failure keeps one)."""
    result = compare(name, got, expected)
    return result.explain(case).splitlines(), result.kind


# --------------------------------------------------------------------------- training
def _reference_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
    """One epoch of torch autograd + torch.optim.SGD on the same batches; updates params and velocity in place.
    Returns the batches' mean losses and sizes."""
    with _reference_mode():
        leaves = {k: params[k].detach().clone().requires_grad_() for k in NAMES}
        opt = torch.optim.SGD([leaves[k] for k in NAMES], lr=lr, momentum=momentum)
        for k in NAMES:
            if momentum:
                opt.state[leaves[k]]["momentum_buffer"] = velocity[k].detach().clone()
        losses, sizes = [], []
        for idx in minibatches(len(X), batch_size, generator, X.device):
            opt.zero_grad()
            loss = F.cross_entropy(_network(leaves, X[idx]), y[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            sizes.append(len(idx))
        for k in NAMES:
            params[k] = leaves[k].detach()
            if momentum:
                velocity[k] = opt.state[leaves[k]]["momentum_buffer"].detach().clone()
    return losses, sizes


def _verify_train_epoch(train_epoch):
    def attempt():
        for device in common.devices():
            gen = torch.Generator().manual_seed(709)
            n, batch_size = 83, 16  # 83 = 5 · 16 + 3: the last batch is smaller
            sizes = (12, 10, 8, 4)
            X = common.randn(gen, n, sizes[0], dtype=torch.float64, device=device)
            y = _labels(gen, n, sizes[-1], device)
            start = _random_params(gen, sizes, torch.float64, device)
            ref_p, ref_v = _clones(start), {k: torch.zeros_like(p) for k, p in start.items()}
            params = _clones(start)
            velocity = {k: torch.zeros_like(p) for k, p in start.items()}
            for epoch, lr, momentum in ((1, 0.1, 0.9), (2, 0.05, 0.5)):  # the settings change: none is built in
                case = (f"{n} rows, sizes {sizes}, batch_size={batch_size}, lr={lr}, momentum={momentum}, float64, "
                        f"{device.type}")
                losses, counts = _reference_epoch(ref_p, ref_v, X, y, batch_size, lr, momentum,
                                                  torch.Generator().manual_seed(epoch))
                expected_loss = sum(l * c for l, c in zip(losses, counts)) / n
                loss = common.call_student(train_epoch, "train_epoch", params, velocity, X, y, batch_size, lr, momentum,
                                           torch.Generator().manual_seed(epoch), case=case, mutable=(0, 1, 7))
                context = f"{case}, after epoch {epoch}"
                for k in BACKPROP_ORDER:
                    if k not in params:
                        common.fail(f"`train_epoch` removed params[{k!r}] ({context}).", kind="missing key")
                    common.check_tensor(f"params[{k!r}]", params[k], ref_p[k], context, derivative=False)
                _check_epoch_loss(loss, expected_loss, losses, counts, batch_size, n, context)

    _composite("train_epoch", [train_epoch], ALL_HELPERS, attempt, _culprits([train_epoch], ALL_HELPERS), False,
               shown=_NETWORK_SHOWN)


def _check_epoch_loss(loss, expected, losses, counts, batch_size, n, context):
    if not isinstance(loss, float) and not (isinstance(loss, int) and not isinstance(loss, bool)):
        common.fail(f"`train_epoch` should return the epoch's mean loss as a Python float (`.item()`), but returned "
                    f"{type(loss).__name__} ({context}).", kind="type", gradient="epoch loss")
    if abs(loss - expected) <= 1e-9 * max(1.0, abs(expected)):
        return
    hint = "Add each batch's loss times its size (len(idx)) to total_loss, and divide by the number of rows."
    if abs(loss - sum(l * batch_size for l in losses) / n) <= 1e-9:
        hint = ("That weighs the last batch as if it were full: multiply each batch's loss by its own size, len(idx), "
                "not by batch_size (the last batch is smaller).")
    elif abs(loss - sum(losses) / len(losses)) <= 1e-9:
        hint = ("That is the mean of the batch means, which counts the rows of the smaller last batch more: weigh each "
                "batch's loss by its size.")
    common.fail(f"train_epoch returned {loss!r}, but the epoch's mean loss was {expected} ({context}). {hint}",
                kind="epoch loss", gradient="epoch loss")


@common.graded
def check_train_epoch(train_epoch):
    """One epoch of hand-gradient training follows autograd's training step for step (83 rows: a short last batch)."""
    _verify_train_epoch(train_epoch)


def _mnist_attempt(train_epoch, epochs, threshold, budget_s):
    run = mnist_run.prepare()
    X, y = run.X.clone(), run.y.clone()  # the data cache stays clean whatever the student's code does
    params = mnist_run.hand_parameters(run.device)
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator().manual_seed(mnist_run.SEED)
    shapes = {k: tuple(p.shape) for k, p in params.items()}
    start = common.student_seconds()
    with mnist_run.one_cpu_thread():
        for epoch in range(epochs):
            common.call_student(
                train_epoch, "train_epoch", params, velocity, X, y, mnist_run.BATCH_SIZE, mnist_run.learning_rate(epoch),
                mnist_run.MOMENTUM, gen, case=f"MNIST, epoch {epoch + 1}", mutable=(0, 1, 7),
                seconds=max(budget_s - (common.student_seconds() - start), 1.0),
                timeout_hint=f"The whole training has {budget_s:.0f} s: work on whole mini-batches with tensor operations "
                             "(no Python loop over single images).",
            )
            for k in NAMES:
                p = params.get(k)
                if not isinstance(p, torch.Tensor) or tuple(p.shape) != shapes[k] or p.dtype != torch.float32:
                    common.fail(f"after epoch {epoch + 1}, params[{k!r}] is not a float32 tensor of shape {shapes[k]} "
                                "any more: train_epoch should only update the parameters' values.", kind="bad parameters")
            spent = common.student_seconds() - start
            if spent > budget_s:
                common.fail(f"training is too slow: {epoch + 1} of {epochs} epochs took {spent:.1f} s, over the budget "
                            f"of {budget_s:.0f} s. Work on whole mini-batches with tensor operations (no Python loop "
                            "over single images).", kind="too slow")
    with torch.no_grad():
        acc = (_network(params, run.X_test).argmax(dim=1) == run.y_test).double().mean().item()
    if not acc >= threshold:
        common.fail(f"after {epochs} epochs the network is right on {100 * acc:.2f}% of the held-out test images; it "
                    f"should reach at least {100 * threshold:.0f}%. Check that every mini-batch takes a step and that the "
                    "loss goes down from epoch to epoch.", kind="accuracy")


@common.graded
def check_mnist_training(train_epoch, epochs=4, threshold=0.92, budget_s=40.0):
    """The MNIST network, trained from lesson 6's initial weights with the student's hand-gradient epochs,
    reaches ``threshold`` on held-out images within ``budget_s`` seconds of the student's code."""
    _composite("train_epoch", [train_epoch], ALL_HELPERS,
               functools.partial(_mnist_attempt, train_epoch, epochs, threshold, budget_s),
               _culprits([train_epoch], ALL_HELPERS), False, shown=_NETWORK_SHOWN,
               passed="The training run reached the accuracy, but only")
