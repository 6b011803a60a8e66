"""Formula-level diagnosis: name the real mistake in a hand-derived gradient.

``gradlab.check.compare`` sees two tensors and can name what is visible in them alone (a sign, a constant
factor, a transpose, a shape). The mistakes students make most often live in the *formula*: a local
derivative taken at the wrong place, dropped or applied twice, a ReLU mask from the wrong tensor, a softmax
over the wrong axis. To name those, a check declares the computation it grades, once, as a small graph of
named operations:

    SIGMOID_LAYER = Exercise(
        Graph(Sigmoid("out", "x"), Dot("J", "out", "dout"), upstream="dout"),
        wrt="x", name="dx")

Every operation knows how to compute its local vector-Jacobian product (with torch autograd, on that one
operation) and the usual wrong versions of it (``Op.variants``). The mechanism runs the backward pass node
by node, replaces one operation's local product by one of its wrong versions, and propagates the result to
the gradient being graded. A variant that matches the student's answer element by element, on every case
tried and on enough elements where it differs from the right answer, is the diagnosis; nothing else is named.

    SIGMOID_LAYER.check(answer, cases)       # answer(x=..., dout=...) -> the student's dx; cases: (label, inputs)
                                             # pairs; compares every case with autograd, raises GradientError
                                             # (or the check's own ``fail``) with a diagnosis and a kind label
    SIGMOID_LAYER.diagnose(results, answer)  # the Diagnosis alone, from CaseResults (``compare_case``)
    informative_case(results)                # the failing case a first message should come from
    locate(graph, inputs, grads=... or helpers=...)   # the first wrong gradient of a whole backward pass
    locate(...).draw()                       # that backward pass drawn, the wrong node marked (gradlab.graph)

No hand formula of an exercise is written here as a reference: right answers always come from autograd
(``Graph.reference``) and the node-by-node pass is tested against it. The wrong versions are built from
autograd's own local derivatives and torch's functions (torch.sigmoid, torch.softmax, F.one_hot, ...).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import diagnose
from .check import TOLERANCES, GradientError, compare
from .reference import autograd_grads

__all__ = [
    "KINDS", "Add", "CaseResult", "CrossEntropy", "Diagnosis", "Dot", "Exercise", "Graph", "L2", "Linear", "LogSoftmax",
    "MSE",
    "Mean", "ReLU", "Scale", "Sigmoid", "Square", "Sub", "Sum", "Trace", "TraceNode", "Variant", "informative_case",
    "layer_helpers", "locate",
]

#: The formula kinds this module names (gradlab.check's own kinds stay as they are: "sign", "factor", ...).
KINDS = {
    "wrong_point": "a local derivative evaluated at the wrong place (σ' of the pre-activation as z(1 − z), of the "
                   "output, of the upstream gradient)",
    "dropped": "a local derivative left out (σ', the input x, the weight W)",
    "twice": "a local derivative applied twice",
    "no_upstream": "the local derivative alone, not multiplied by the upstream gradient",
    "sigmoid_part": "σ or 1 − σ in place of σ(1 − σ)",
    "relu_slope": "ReLU's slope taken as x instead of 1",
    "mask_upstream": "a ReLU mask taken from the upstream gradient's sign",
    "mask_missing": "no ReLU mask",
    "mask_inverted": "the ReLU mask inverted",
    "mask_at_zero": "the ReLU mask x >= 0 instead of x > 0",
    "other_activation": "another activation's derivative",
    "softmax_axis": "the softmax over the wrong axis",
    "softmax_diag": "only the diagonal of the softmax Jacobian",
    "onehot_added": "the one-hot labels added instead of subtracted",
    "onehot_missing": "the one-hot term left out",
    "last_term": "an accumulation that keeps only the last term (`=` for `+=`)",
    "wrong_factor": "a local factor that belongs elsewhere (dW for W, x in db, the other input column, w for x)",
    "stale_input": "the first observation's input used for every term",
    "error_term": "the prediction where the error (prediction − target) belongs",
    "loss_for_grad": "the loss itself where its derivative belongs",
    "reg_coeff": "a regularisation gradient with the wrong coefficient (the difference is a multiple of W)",
    "penalty_value": "the penalty's value added instead of its gradient (a constant offset)",
}

# A variant is named only when it differs from the right answer on at least this many elements, over all the
# cases tried together (for a single-number gradient: on this many cases).
MIN_INFORMATIVE = 2
# An element counts as informative when the variant differs from the right answer there by this many times
# the tolerance: a variant that is merely "close" to the right answer proves nothing.
INFORMATIVE_MARGIN = 10.0


# =========================================================================== values
def _f64(t):
    if isinstance(t, torch.Tensor):
        t = t.detach()
        return t.to(device="cpu", dtype=torch.float64) if t.is_floating_point() else t.to("cpu")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return torch.tensor(float(t), dtype=torch.float64)
    return t


def _is_float(t):
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _grad64(t):
    """A student's gradient as float64 on the CPU, whatever its dtype: a bool mask or an integer tensor is compared by
    its values (and told apart by its dtype elsewhere), never subtracted as it is."""
    return t.detach().to(device="cpu", dtype=torch.float64)


# =========================================================================== variants
@dataclass
class Variant:
    """One usual wrong version of an operation's local gradient for one of its inputs.

    kind: a short fixed label ("wrong_point", "mask_missing", ...); text: what the student did, fix: the fix, in
    one sentence each, in the exercise's notation. ``value`` is the wrong local gradient for ``input`` (None: the
    right one); ``basis`` adds a one-parameter family ``value + α·basis`` (α fitted, and it must matter). With a
    basis, ``text`` may be a function of α.
    """

    kind: str
    input: str
    text: object
    fix: str
    value: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    key: str = ""  # stable identity across cases: "op index/input/kind/count"

    def sentence(self, alpha=None):
        text = self.text(alpha) if callable(self.text) else self.text
        return f"{text} Fix: {self.fix}"


class _Names:
    """How the exercise writes a tensor and its gradient (the student's notation)."""

    def __init__(self, notation, grad_notation):
        self.notation, self.grad_notation = notation, grad_notation

    def show(self, t):
        return self.notation.get(t, t)

    def grad(self, t):
        """The gradient's name; "" when the exercise has no upstream factor there (a local derivative alone)."""
        name = self.grad_notation.get(t, f"∂J/∂{self.show(t)}")
        return "" if name is None else name


class Op:
    """One operation of a graph: ``out = forward(*inputs)``. Subclasses give ``forward`` and ``variants``."""

    symbol = "op"
    has_mask = False  # whether a ReLU-style mask is part of this operation (scopes the mask hints)

    def __init__(self, out, *inputs):
        self.out, self.inputs = out, tuple(inputs)
        self.index = None

    def forward(self, *values):
        raise NotImplementedError

    def vjp(self, values, g):
        """Local vector-Jacobian products {input: ∂J/∂input} for upstream ``g``, by autograd on this op alone."""
        args = [values[n] for n in self.inputs]
        diff = [i for i, a in enumerate(args) if _is_float(a) and n_differentiable(self, i)]
        with torch.enable_grad():
            xs = [a.detach().requires_grad_(True) if i in diff else a for i, a in enumerate(args)]
            out = self.forward(*xs)
            grads = torch.autograd.grad(out, [xs[i] for i in diff], g, allow_unused=True)
        return {self.inputs[i]: (torch.zeros_like(args[i]) if d is None else d.detach()) for i, d in zip(diff, grads)}

    def variants(self, values, g, local, names):
        """Wrong local gradients: yields Variant objects. ``local`` is the right {input: vjp}."""
        return ()


def n_differentiable(op, i):
    """Whether ``op``'s input ``i`` gets a gradient (labels, upstream constants and coefficients do not)."""
    return i not in getattr(op, "constant_inputs", ())


# --------------------------------------------------------------------------- activations
class Sigmoid(Op):
    """out = σ(inp)."""

    symbol = "σ"

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, z):
        return torch.sigmoid(z)

    def variants(self, values, g, local, names):
        z, s = values[self.inputs[0]], values[self.out]
        x, y, up, dx = names.show(self.inputs[0]), names.show(self.out), names.grad(self.out), names.grad(self.inputs[0])
        d = local[self.inputs[0]] / torch.where(g == 0, torch.ones_like(g), g)  # σ'(z), from autograd
        deriv = _local_derivative(torch.sigmoid)  # σ'(·) by autograd, evaluated anywhere

        def out_form(v):  # the derivative written with the output, v·(1 − v), applied to whatever v is
            return v * (1 - v)

        inp = self.inputs[0]
        defined = "" if y.startswith("σ(") else f", with {y} = σ({x})"

        def times(expr):  # the upstream factor, unless the exercise has none (a local derivative on its own)
            return f"{up} · {expr}" if up else expr

        right = times(f"{y} · (1 − {y})") + defined
        yield Variant("wrong_point", inp, f"it computes {x}·(1 − {x}): that is σ' written for the output σ, "
                      f"applied to the input {x}.", f"use {right}.", g * out_form(z))
        if not y.startswith("σ("):
            yield Variant("wrong_point", inp, f"it evaluates σ' at {y} = σ({x}), so the sigmoid is applied twice: "
                          f"σ({y})·(1 − σ({y})).", f"{y} is already σ({x}): use {times(f'{y} · (1 − {y})')}.",
                          g * deriv(s))
        else:
            yield Variant("wrong_point", inp, f"it evaluates σ' at σ({x}), so the sigmoid is applied twice.",
                          f"use {right}.", g * deriv(s))
        if up:
            for value in (g * deriv(g), g * out_form(g), deriv(g), out_form(g)):
                yield Variant("wrong_point", inp, f"it evaluates the sigmoid's derivative at the upstream gradient {up} "
                              f"instead of at the forward values.", f"use {right}.", value)
        sx, one_minus = f"σ({x})", f"1 − σ({x})"
        yield Variant("sigmoid_part", inp, f"it {'multiplies ' + up + ' by' if up else 'is'} {sx} only, but "
                      f"σ'({x}) = {sx}·(1 − {sx}).", f"multiply by (1 − {sx}) as well: {right}.", g * s)
        yield Variant("sigmoid_part", inp, f"it {'multiplies ' + up + ' by' if up else 'is'} {one_minus} only, but "
                      f"σ'({x}) = {sx}·(1 − {sx}).", f"multiply by {sx} as well: {right}.", g * (1 - s))
        for value, what in ((g * (1 - torch.sigmoid(s)), f"1 − σ({y})"), (g * torch.sigmoid(s), f"σ({y})")):
            yield Variant("sigmoid_part", inp, f"it {'multiplies ' + up + ' by' if up else 'is'} {what}: only one "
                          f"factor of σ', and taken at {y}, which is already the sigmoid.", f"use {right}.", value)
        if up:
            yield Variant("dropped", inp, f"the sigmoid's local derivative σ'({x}) is missing: {dx} equals {up}.",
                          f"multiply {up} by σ'({x}) = {y} · (1 − {y}).", g.clone())
            yield Variant("twice", inp, f"σ'({x}) is applied twice (once is already in {up}, or it is multiplied in "
                          f"again).", f"multiply by σ'({x}) = {y} · (1 − {y}) once.", g * d * d)
            yield Variant("no_upstream", inp, f"it is the local derivative σ'({x}) alone, not multiplied by the "
                          f"upstream gradient {up}.", f"multiply by {up} (chain rule): {right}.", d.clone())
        else:
            yield Variant("twice", inp, f"σ'({x}) is applied twice: it is squared.", f"use {right}.", g * d * d)


class ReLU(Op):
    """out = max(inp, 0)."""

    symbol = "ReLU"
    has_mask = True

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, z):
        return torch.relu(z)

    def variants(self, values, g, local, names):
        z = values[self.inputs[0]]
        x, up, dx = names.show(self.inputs[0]), names.grad(self.out), names.grad(self.inputs[0])
        mask = _local_derivative(torch.relu)(z)  # 1 where z > 0, else 0 (PyTorch's slope at 0 is 0)
        inp = self.inputs[0]
        fix = f"multiply {up} by the mask ({x} > 0)."
        yield Variant("mask_missing", inp, f"the ReLU mask is missing: {dx} should be 0 wherever {x} ≤ 0.", fix, g.clone())
        yield Variant("relu_slope", inp, f"it multiplies {up} by {x} where {x} > 0, but ReLU's slope there is 1, "
                      f"not {x}.", f"use the mask ({x} > 0), not {x} itself.", g * torch.relu(z))
        yield Variant("mask_upstream", inp, f"the mask comes from the sign of the upstream gradient {up}; it must "
                      f"come from the forward input {x}.", f"use {up} * ({x} > 0).", g * (g > 0))
        yield Variant("mask_inverted", inp, f"the mask is inverted: it keeps {up} where {x} ≤ 0 and zeroes it where "
                      f"{x} > 0.", fix, g * (1 - mask))
        yield Variant("mask_at_zero", inp, f"where {x} is exactly 0 it passes {up} through; ReLU's slope at 0 is "
                      f"taken as 0 (as PyTorch does).", f"use {x} > 0, not {x} >= 0.", g * (z >= 0))
        yield Variant("no_upstream", inp, f"it is the mask ({x} > 0) alone, not multiplied by the upstream gradient "
                      f"{up}.", f"multiply by {up} (chain rule): {up} * ({x} > 0).", mask.clone())
        yield Variant("other_activation", inp, f"it uses the sigmoid's derivative σ'({x}); ReLU's derivative is 1 "
                      f"where {x} > 0 and 0 elsewhere.", fix, g * _local_derivative(torch.sigmoid)(z))


def _local_derivative(fn):
    """The elementwise derivative of ``fn`` by autograd: a function of a tensor."""

    def derivative(v):
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(fn(v).sum(), v)
        return d.detach()

    return derivative


# --------------------------------------------------------------------------- layers
class Linear(Op):
    """out = x @ W (+ b). W of shape (D_in, D_out), or (D_in,) for a single output per row."""

    symbol = "linear"

    def __init__(self, out, x, W, b=None):
        super().__init__(out, *((x, W) if b is None else (x, W, b)))

    def forward(self, x, W, b=None):
        return x @ W if b is None else x @ W + b

    def variants(self, values, g, local, names):
        x_name, W_name = self.inputs[0], self.inputs[1]
        x, W = values[x_name], values[W_name]
        sx, sW, up = names.show(x_name), names.show(W_name), names.grad(self.out)
        dW_name = names.grad(W_name)
        rows = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x.reshape(1, -1)
        grows = g.reshape(rows.shape[0], -1)
        if rows.shape[0] > 1:
            last = torch.outer(rows[-1], grows[-1]).reshape(W.shape)
            yield Variant("last_term", W_name, f"only the last row's term ({sx}ᵀ·{up}) of the last example is kept, as if "
                          f"`=` were used where `+=` belongs in a loop over the batch.",
                          f"sum over all rows: {dW_name} = {sx}ᵀ @ {up}.", last)
        if W.dim() == 1 and W.shape[0] == 2:
            swapped = local[W_name].flip(0)
            yield Variant("wrong_factor", W_name, f"the two inputs are swapped: {dW_name}[0] uses the column "
                          f"{sx}[:, 1] and the other way round.", f"pair {sW}[j] with the column {sx}[:, j].", swapped)
        if len(self.inputs) > 2:
            b_name = self.inputs[2]
            db, sb = names.grad(b_name), names.show(b_name)
            if grows.shape[0] > 1:
                yield Variant("last_term", b_name, f"only the last row of {up} is kept, as if `=` were used where `+=` "
                              f"belongs in a loop over the batch.", f"{db} = {up} summed over the rows.",
                              grows[-1].reshape(values[b_name].shape))
            if W.dim() == 2:
                yield Variant("wrong_factor", b_name, f"it multiplies by the input {sx}, as for {sW}; the bias's local "
                              f"derivative is 1.", f"{db} = {up} summed over the rows, without {sx}.",
                              local[W_name].sum(dim=0).reshape(values[b_name].shape))
            else:
                for j in range(rows.shape[1]):
                    yield Variant("wrong_factor", b_name, f"it multiplies by the input column {sx}[:, {j}], as for "
                                  f"{sW}[{j}]; the bias's local derivative is 1.", f"{db} = {up} summed, without {sx}.",
                                  (grows.reshape(-1) * rows[:, j]).sum().reshape(values[b_name].shape))
        if _is_float(x) and x_name in local and W.dim() == 2:
            dW = local[W_name]
            yield Variant("wrong_factor", x_name, f"it uses the gradient {dW_name} where the weight {sW} belongs.",
                          f"{names.grad(x_name)} = {up} @ {sW}ᵀ.", g @ dW.T)
            if g.shape[-1] == 1 and x.shape[-1] > 1:
                yield Variant("dropped", x_name, f"the weight {sW} is missing: {up} is passed to {sx} without the factor "
                              f"{sW}ᵀ.", f"{names.grad(x_name)} = {up} @ {sW}ᵀ.", g.expand_as(x).clone())


class Scale(Op):
    """out = w · x (+ b) with a scalar (0-dim) parameter w broadcast over the batch x.

    w (and b) may also have x's shape: one copy per observation, so that ∂J/∂w is the per-observation local
    derivative ∂z_i/∂w (lesson 3's dz_dw and dz_db, with ``Sum`` as the root and no upstream factor)."""

    symbol = "·"

    def __init__(self, out, w, x, b=None):
        super().__init__(out, *((w, x) if b is None else (w, x, b)))

    def forward(self, w, x, b=None):
        return w * x if b is None else w * x + b

    def variants(self, values, g, local, names):
        w_name, x_name = self.inputs[0], self.inputs[1]
        w, x = values[w_name], values[x_name]
        sw, sx, up, dw = names.show(w_name), names.show(x_name), names.grad(self.out), names.grad(w_name)
        sz = names.show(self.out)
        gx = g * x
        shape = values[w_name].shape
        each = w.dim() > 0 and tuple(w.shape) == tuple(g.shape)  # one w per observation: no sum over the batch

        def total(t):
            return t.clone() if each else t.sum().reshape(shape)

        def times(factor):  # "Σ ∂J/∂z · x", or the local derivative alone ("x") when there is no upstream factor
            term = f"{up} · {factor}" if up else factor
            return term if each else f"Σ {term}"

        yield Variant("dropped", w_name, f"the factor {sx} is missing: ∂{sz}/∂{sw} = {sx}.",
                      f"{dw} = {times(sx)}.", total(g))
        yield Variant("twice", w_name, f"{sx} is multiplied in twice.", f"{dw} = {times(sx)}, with {sx} once.",
                      total(gx * x))
        yield Variant("wrong_factor", w_name, f"it multiplies by {sw} where {sx} belongs: ∂{sz}/∂{sw} = {sx}.",
                      f"{dw} = {times(sx)}.", total(g * w))
        flat_x, flat_g = x.reshape(-1), g.reshape(-1)
        if flat_x.numel() > 1 and not each:
            yield Variant("stale_input", w_name, f"it uses the first observation's {sx} in every term instead of each "
                          f"observation's own {sx}[i].", f"use the current {sx}[i] in each term.",
                          (flat_x[0] * g).sum().reshape(shape))
            yield Variant("last_term", w_name, f"only the last observation's term is kept, as if `=` were used where "
                          f"`+=` belongs in a loop.", f"sum the terms over all observations.",
                          (flat_g[-1] * flat_x[-1]).reshape(shape))
        if len(self.inputs) > 2:
            b_name = self.inputs[2]
            db, sb = names.grad(b_name), names.show(b_name)
            b_each = values[b_name].dim() > 0 and tuple(values[b_name].shape) == tuple(g.shape)
            fix = (f"{db} = 1 for every observation, without {sx}." if not up else
                   f"{db} = {up}, without {sx}." if b_each else f"{db} = Σ {up}, without {sx}.")
            yield Variant("wrong_factor", b_name, f"it multiplies by {sx}, but ∂{sz}/∂{sb} = 1.", fix,
                          gx.clone() if b_each else gx.sum().reshape(values[b_name].shape))
            if flat_g.numel() > 1 and not b_each:
                yield Variant("last_term", b_name, f"only the last observation's term is kept, as if `=` were used "
                              f"where `+=` belongs in a loop.", f"sum the terms over all observations.",
                              flat_g[-1].reshape(values[b_name].shape))


# --------------------------------------------------------------------------- losses and roots
class MSE(Op):
    """out = mean((pred − target)²) (reduction "mean") or their sum ("sum"); target is reshaped to pred's shape."""

    symbol = "MSE"

    def __init__(self, out, pred, target, reduction="mean"):
        super().__init__(out, pred, target)
        self.reduction = reduction
        self.constant_inputs = (1,)

    def forward(self, pred, target):
        err = (pred - target.reshape(pred.shape)) ** 2
        return err.mean() if self.reduction == "mean" else err.sum()

    def variants(self, values, g, local, names):
        p_name, y_name = self.inputs
        p, y = values[p_name], values[y_name].reshape(values[p_name].shape)
        sp, sy, dp = names.show(p_name), names.show(y_name), names.grad(p_name)
        n = p.numel() if self.reduction == "mean" else 1
        yield Variant("error_term", p_name, f"it uses the prediction {sp} where the error {sp} − {sy} belongs.",
                      f"{dp} is built from {sp} − {sy}.", g * 2 * p / n)
        yield Variant("loss_for_grad", p_name, f"it uses the squared error ({sp} − {sy})², the loss itself, instead of "
                      f"its derivative.", f"the derivative of ({sp} − {sy})² is 2·({sp} − {sy}).", g * (p - y) ** 2 / n)


class CrossEntropy(Op):
    """out = mean cross-entropy of logits (N, C) against integer labels (N,), as F.cross_entropy."""

    symbol = "CE"

    def __init__(self, out, logits, labels):
        super().__init__(out, logits, labels)
        self.constant_inputs = (1,)

    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels)

    def variants(self, values, g, local, names):
        z_name = self.inputs[0]
        z, labels = values[z_name], values[self.inputs[1]]
        n, c = z.shape
        p = torch.softmax(z, dim=1)
        onehot = F.one_hot(labels, c).to(z.dtype)
        sz, dz = names.show(z_name), names.grad(z_name)
        right = f"{dz} = (softmax({sz}, dim=1) − one_hot) / N"
        yield Variant("softmax_axis", z_name, "the softmax is taken over the wrong axis (down the batch, dim=0); each "
                      "row's probabilities must sum to 1.", f"use softmax over dim=1: {right}.",
                      g * (torch.softmax(z, dim=0) - onehot) / n)
        yield Variant("softmax_diag", z_name, "it keeps only the diagonal p·(1 − p) of the softmax Jacobian and drops "
                      "the off-diagonal terms −p_i·p_j.", f"with the whole Jacobian the result is simply {right}.",
                      g * (-(1 - p) * onehot) / n)
        yield Variant("softmax_diag", z_name, "it multiplies by the diagonal p·(1 − p) of the softmax Jacobian, which "
                      "(p − one_hot) already contains.", f"{right}, with no extra factor.",
                      g * p * (1 - p) * (p - onehot) / n)
        yield Variant("onehot_added", z_name, "it adds the one-hot labels instead of subtracting them.",
                      f"{right}.", g * (p + onehot) / n)
        yield Variant("onehot_missing", z_name, "the one-hot term is missing: it is the softmax alone.",
                      f"subtract the one-hot labels: {right}.", g * p / n)
        assigned = torch.where(onehot.bool(), -torch.ones_like(p), p)
        yield Variant("last_term", z_name, "at each row's label it assigns −1 instead of subtracting 1 (`=` where "
                      "`-=` belongs), so the probability there is lost.", f"p[range(N), labels] -= 1, then / N.",
                      g * assigned / n)


class LogSoftmax(Op):
    """out = log_softmax(inp) along each row (dim=1) of a (B, C) input: lesson 7's first layer that is not
    elementwise (every output of a row depends on every input of the row, through the softmax's sum)."""

    symbol = "log softmax"

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, z):
        return torch.log_softmax(z, dim=1)

    def variants(self, values, g, local, names):
        z_name = self.inputs[0]
        logp = values[self.out]
        p = torch.softmax(values[z_name], dim=1)
        up, dz, so, sz = names.grad(self.out), names.grad(z_name), names.show(self.out), names.show(z_name)
        right = f"{dz} = {up} − p · ({up} summed along each row, dim=1, keepdim=True), with p = exp({so})"
        row = g.sum(dim=1, keepdim=True)
        yield Variant("dropped", z_name, f"it is {up} itself: the term −p·Σ{up} is missing. Every entry of {so} depends "
                      f"on every entry of its row of {sz} (through the softmax's sum), so each entry of {dz} collects a "
                      f"term from the whole row.", f"{right}.", g.clone())
        yield Variant("softmax_diag", z_name, f"it keeps only the diagonal of the log-softmax Jacobian, {up}·(1 − p), "
                      f"and drops the off-diagonal terms −p·{up} that the other entries of the row send.",
                      f"{right}.", g * (1 - p))
        yield Variant("softmax_axis", z_name, f"the sum of {up} is taken down the batch (dim=0); it belongs along each "
                      f"row (dim=1): a row's probabilities depend on that row alone.", f"{right}.",
                      g - p * g.sum(dim=0, keepdim=True))
        yield Variant("softmax_axis", z_name, f"the sum of {up} is taken over the whole batch (no dim); it belongs "
                      f"along each row (dim=1): a row's probabilities depend on that row alone.", f"{right}.",
                      g - p * g.sum())
        yield Variant("wrong_factor", z_name, f"it multiplies the row sum of {up} by {so} itself, where the "
                      f"probabilities p = exp({so}) belong.", f"{right}.", g - logp * row)
        yield Variant("wrong_factor", z_name, f"it subtracts the row sum of {up}·{so}, where p·(the row sum of {up}) "
                      f"belongs, with p = exp({so}).", f"{right}.", g - (g * logp).sum(dim=1, keepdim=True))
        yield Variant("no_upstream", z_name, f"it adds p = exp({so}) to {up} as it is: the softmax's term must be "
                      f"multiplied by the row sum of {up} (the chain rule) and subtracted.", f"{right}.", g + p)
        yield Variant("other_activation", z_name, f"it is the softmax's backward, p·({up} − Σ p·{up}); the "
                      f"log-softmax's is different.", f"{right}.", p * (g - (p * g).sum(dim=1, keepdim=True)))


class L2(Op):
    """out = lam · Σ W² (a weight penalty; lam is a number)."""

    symbol = "λ‖·‖²"

    def __init__(self, out, W, lam, notation="λ"):
        super().__init__(out, W)
        self.lam, self.lam_name = float(lam), notation

    def forward(self, W):
        return self.lam * (W**2).sum()

    def variants(self, values, g, local, names):
        W_name = self.inputs[0]
        W = values[W_name]
        sW, lam, value = names.show(W_name), self.lam_name, self.lam
        fix = f"the derivative of {lam}·Σ{sW}² is 2·{lam}·{sW}."

        def coefficient(alpha):
            have = 2 + alpha / value if value else alpha
            return (f"the penalty's gradient has the wrong coefficient: it adds {_nice(have):g}·{lam}·{sW} where "
                    f"2·{lam}·{sW} belongs.")

        yield Variant("reg_coeff", W_name, coefficient, fix, basis=g * W)
        zero = torch.zeros_like(W)
        yield Variant("penalty_value", W_name, f"every element is off by one same number: the penalty's value "
                      f"{lam}·Σ{sW}² (or a multiple of it) is added instead of its gradient.", fix,
                      value=zero, basis=g * torch.ones_like(W))
        yield Variant("penalty_value", W_name, f"it adds a multiple of {sW}² (each element's penalty) instead of "
                      f"the penalty's gradient.", fix, value=zero, basis=g * W**2)


class Dot(Op):
    """out = Σ a · upstream: the scalar whose gradient a layer's backward computes for a given upstream gradient."""

    symbol = "Σ·"

    def __init__(self, out, a, upstream):
        super().__init__(out, a, upstream)
        self.constant_inputs = (1,)

    def forward(self, a, upstream):
        return (a * upstream).sum()


class Sum(Op):
    """out = Σ inp (for an elementwise local derivative: the gradient of the sum is the derivative itself)."""

    symbol = "Σ"

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, a):
        return a.sum()


class Add(Op):
    """out = a + b."""

    symbol = "+"

    def __init__(self, out, a, b):
        super().__init__(out, a, b)

    def forward(self, a, b):
        return a + b


class Sub(Op):
    """out = a − b; b is data (targets, labels) that gets no gradient."""

    symbol = "−"

    def __init__(self, out, a, b):
        super().__init__(out, a, b)
        self.constant_inputs = (1,)

    def forward(self, a, b):
        return a - b.reshape(a.shape)


class Square(Op):
    """out = inp², elementwise. error: (prediction, target) when inp is the error prediction − target (lesson 4's
    e = f − y), which adds the slip of squaring the prediction instead of the error."""

    symbol = "²"

    def __init__(self, out, inp, error=None):
        super().__init__(out, inp)
        self.error = tuple(error) if error else None

    def forward(self, e):
        return e * e

    def variants(self, values, g, local, names):
        name = self.inputs[0]
        e = values[name]
        se, sq, up, de = names.show(name), names.show(self.out), names.grad(self.out), names.grad(name)
        right = f"{de} = {up} · 2{se}"
        yield Variant("dropped", name, f"the square's local derivative ∂{sq}/∂{se} = 2{se} is missing: {de} equals "
                      f"{up}.", f"{right}.", g.clone())
        yield Variant("loss_for_grad", name, f"it uses the square {se}² itself where its derivative 2{se} belongs.",
                      f"{right}.", g * e * e)
        if self.error and all(n in values for n in self.error):
            pred, target = self.error
            sp, st = names.show(pred), names.show(target)
            at_prediction = self.vjp({name: values[pred]}, g)[name]  # the square's local derivative taken at the prediction
            yield Variant("error_term", name, f"it uses the prediction {sp} where the error {se} = {sp} − {st} belongs.",
                          f"{right}, with {se} = {sp} − {st}.", at_prediction)


class Mean(Op):
    """out = mean(inp) over every element."""

    symbol = "mean"

    def __init__(self, out, inp):
        super().__init__(out, inp)

    def forward(self, a):
        return a.mean()


# =========================================================================== graph
class Graph:
    """A computation as a list of operations in forward order; the last one's output is the scalar loss.

    notation: how the exercise writes tensors ({"s": "σ"}); grad_notation: how it writes gradients
    ({"out": "dout"}; None for a local derivative with no upstream factor); upstream: the input that is an
    upstream gradient given to a layer's backward; data: inputs whose gradient nobody computes (the images X).
    """

    def __init__(self, *ops, notation=None, grad_notation=None, upstream=None, data=()):
        self.ops = list(ops)
        self.data = tuple(data)  # inputs that are data (X): their gradient is not part of the backward pass shown
        produced = {}
        for i, op in enumerate(self.ops):
            op.index = i
            if op.out in produced:
                raise ValueError(f"{op.out!r} is produced twice")
            produced[op.out] = i
        self.root = self.ops[-1].out
        self.leaves = []
        for op in self.ops:
            for name in op.inputs:
                if name not in produced and name not in self.leaves:
                    self.leaves.append(name)
        self.upstream = upstream
        grads = dict(grad_notation or {})
        self.names = _Names(dict(notation or {}), grads)

    def has_mask(self):
        return any(op.has_mask for op in self.ops)

    def consumers(self, name):
        return [op for op in self.ops if name in op.inputs]

    # ---------------------------------------------------------------- passes
    def forward(self, inputs):
        """Every tensor's value, in float64 on the CPU (integers stay integers)."""
        missing = [n for n in self.leaves if n not in inputs]
        if missing:
            raise KeyError(f"inputs lack {missing}")
        values = {n: _f64(inputs[n]) for n in self.leaves}
        with torch.no_grad():
            for op in self.ops:
                values[op.out] = op.forward(*(values[n] for n in op.inputs))
        return values

    def backward(self, values, replace=None):
        """∂J/∂t for every tensor t, node by node with each op's autograd vjp.

        replace: (op index, input name, tensor) puts that tensor in place of the op's local gradient for that input.
        Returns (grads, upstream) where upstream[op index] is the gradient that reached the op's output.
        """
        grads = {self.root: torch.ones_like(values[self.root])}
        upstream = {}
        for op in reversed(self.ops):
            g = grads.get(op.out)
            if g is None:
                continue
            upstream[op.index] = g
            local = op.vjp(values, g)
            if replace is not None and replace[0] == op.index:
                local[replace[1]] = replace[2]
            for name, d in local.items():
                grads[name] = grads[name] + d if name in grads else d
        return grads, upstream

    def reference(self, inputs, wrt):
        """The right gradients of the loss with respect to ``wrt``, by autograd on the whole graph: leaves, or
        intermediate tensors (lesson 4 grades the gradient of every node)."""
        wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        fixed = {n: _f64(inputs[n]) for n in self.leaves}
        if any(w not in self.leaves for w in wrt):
            with torch.enable_grad():
                values = {n: v.clone().requires_grad_(True) if _is_float(v) and not _is_constant_leaf(self, n) else v
                          for n, v in fixed.items()}
                for op in self.ops:
                    values[op.out] = op.forward(*(values[n] for n in op.inputs))
                grads = torch.autograd.grad(values[self.root], [values[w] for w in wrt], allow_unused=True)
            return {w: (torch.zeros_like(values[w]) if g is None else g).detach() for w, g in zip(wrt, grads)}

        def loss(*leaves):
            values = dict(fixed)
            values.update(zip(wrt, leaves))
            for op in self.ops:
                values[op.out] = op.forward(*(values[n] for n in op.inputs))
            return values[self.root]

        return dict(zip(wrt, autograd_grads(loss, *(fixed[n] for n in wrt))))

    def propagate(self, values, op_index, input_name, delta):
        """How a change ``delta`` in one op's local gradient changes every tensor's gradient (backward is linear)."""
        grads = {input_name: delta}
        for op in reversed(self.ops[:op_index]):  # the rest of the backward pass, carrying only the change
            g = grads.get(op.out)
            if g is None:
                continue
            for name, d in op.vjp(values, g).items():
                grads[name] = grads[name] + d if name in grads else d
        return grads


# =========================================================================== exercises
@dataclass
class CaseResult:
    """One case of a check: the inputs, the student's answer per target, the right one, and their comparison."""

    label: str
    inputs: dict
    got: dict
    expected: dict
    comparisons: dict

    @property
    def ok(self):
        return all(c.ok for c in self.comparisons.values())

    def failing(self):
        return [name for name, c in self.comparisons.items() if not c.ok]

    @classmethod
    def plain(cls, label, name, got, expected, inputs=None):
        """One gradient of one case, compared, for a check with no declared computation (``informative_case``)."""
        return cls(label, dict(inputs or {}), {name: got}, {name: expected}, {name: compare(name, got, expected)})


@dataclass
class Diagnosis:
    """What the mechanism found. kind is a fixed label; named says whether a specific formula mistake was proven."""

    kind: str | None
    sentence: str
    named: bool = False
    op: str | None = None  # the tensor whose local gradient is wrong (the first wrong node)
    follows: list = field(default_factory=list)  # other gradients whose differences follow from it
    evidence: str = ""
    key: str = ""  # the variant that fits (Variant.key), for ``locate(..., diagnosis=)``


class Exercise:
    """A graded gradient (or several) of a declared computation.

    wrt: the leaf (or leaves) whose gradient the student computes; name: how the message calls it (or a tuple of
    names); select: optional function applied to a full gradient (e.g. ``lambda g: g[0]`` for ∂L/∂w1).
    atol: optional function of a case's inputs giving the absolute rounding a right answer can carry there when it
    follows an input's size rather than the gradient's (softmax's gradient from log-probabilities of logits near
    ±400); a case is then judged with the larger of it and compare's default atol.
    """

    def __init__(self, graph, wrt, name=None, select=None, atol=None):
        self.graph = graph
        self.wrt = (wrt,) if isinstance(wrt, str) else tuple(wrt)
        if name is None:
            name = tuple(graph.names.grad(w) for w in self.wrt)
        self.names = (name,) if isinstance(name, str) else tuple(name)
        self.select = select or (lambda g: g)
        self.atol = atol
        if len(self.names) != len(self.wrt):
            raise ValueError("one name per gradient")

    def only(self, name):
        """The same computation grading one of its gradients (for a check that compares them one at a time)."""
        if name not in self.names:
            raise KeyError(f"{name!r} is not one of {self.names}")
        return Exercise(self.graph, self.wrt[self.names.index(name)], name=name, select=self.select, atol=self.atol)

    # ---------------------------------------------------------------- per case
    def expected(self, inputs):
        """The right answer(s) in the inputs' dtype and device, from autograd."""
        ref = self.graph.reference(inputs, self.wrt)
        like = _like(inputs, self.wrt)
        return {n: self.select(ref[w]).to(dtype=like[w][0], device=like[w][1]) for n, w in zip(self.names, self.wrt)}

    def compare_case(self, label, inputs, got, expected=None):
        got = self._as_dict(got)
        expected = self.expected(inputs) if expected is None else expected
        comparisons = {n: compare(n, got.get(n), expected[n], atol=self.atol_for(inputs, got.get(n), expected[n]))
                       for n in self.names}
        return CaseResult(label, inputs, got, expected, comparisons)

    def atol_for(self, inputs, got, expected):
        """compare's atol for one gradient of one case: its default (None) unless ``atol`` declares more."""
        if self.atol is None:
            return None
        return max(_tolerance(got, expected)[1] * diagnose.scale_of(_f64(expected)), float(self.atol(inputs)))

    def _as_dict(self, got):
        if isinstance(got, dict) and set(self.names) <= set(got):
            return {n: got[n] for n in self.names}
        if len(self.names) == 1:
            return {self.names[0]: got}
        if isinstance(got, (tuple, list)) and len(got) == len(self.names):
            return dict(zip(self.names, got))
        return {n: None for n in self.names}

    def variant_values(self, inputs):
        """[(Variant, op, {name: (value, basis)})]: each wrong local gradient on the path, at the graded gradient(s).

        value is the graded gradient with that one local gradient replaced; basis (for a one-parameter variant)
        is how the graded gradient moves per unit of α.
        """
        values = self.graph.forward(inputs)
        grads, upstream = self.graph.backward(values)
        out = []
        for op in self.graph.ops[::-1]:
            if op.index not in upstream:
                continue
            g = upstream[op.index]
            local = op.vjp(values, g)
            seen = {}
            for variant in op.variants(values, g, local, self.graph.names):
                if variant.input not in local:
                    continue
                right = local[variant.input]
                if variant.value is not None and variant.value.shape != right.shape:
                    continue
                count = seen[variant.key or variant.kind] = seen.get(variant.key or variant.kind, 0) + 1
                variant.key = f"{op.index}/{variant.input}/{variant.kind}/{count}"
                at = self._propagated(values, grads, op, variant.input,
                                      None if variant.value is None else variant.value - right, variant.basis)
                if at is not None:
                    out.append((variant, op, at))
        return out

    def _propagated(self, values, grads, op, input_name, delta, basis):
        at, moved = {}, False
        for part, what in ((delta, "value"), (basis, "basis")):
            if part is None:
                continue
            change = self.graph.propagate(values, op.index, input_name, part)
            for n, w in zip(self.names, self.wrt):
                base = self.select(grads[w])
                d = self.select(change[w]) if w in change else torch.zeros_like(base)
                moved = moved or w in change
                value, b = at.get(n, (base, None))
                at[n] = (value + d, b) if what == "value" else (value, d)
        if not at:
            return None
        for n, w in zip(self.names, self.wrt):
            at.setdefault(n, (self.select(grads[w]), None))
        return at if moved else None

    # ---------------------------------------------------------------- over cases
    def diagnose(self, results, answer=None):
        """A Diagnosis from several CaseResults (the student's answers on several cases).

        A variant is named when it matches the student's answer on every case (every graded gradient) and
        differs from the right answer on at least MIN_INFORMATIVE elements; when two different kinds of mistake
        both match, neither is named. ``answer`` (optional) lets the mechanism call the student's code on probe
        inputs (does the answer depend on the forward values at all? on the upstream gradient?).
        """
        usable = [r for r in results if all(isinstance(r.got.get(n), torch.Tensor) for n in self.names)]
        if not usable or all(r.ok for r in usable):
            return Diagnosis(None, "", False)
        candidates, keys = {}, {}
        for r in usable:
            keys[id(r)] = set()
            for variant, op, at in self.variant_values(r.inputs):
                keys[id(r)].add(variant.key)
                entry = candidates.setdefault(variant.key, {"variant": variant, "op": op, "fits": True, "informative": 0,
                                                            "alphas": [], "cases": 0})
                if not entry["fits"]:
                    continue
                ok, informative, alpha = _fits(variant, at, r)
                entry["fits"] = ok
                entry["informative"] += informative
                entry["cases"] += 1
                if alpha is not None:
                    entry["alphas"].append(alpha)
        # A slip that cannot happen on some case (a loop over one row) must leave the answer right there.
        wrong_cases = sum(not r.ok for r in usable)
        matching = [e for e in candidates.values()
                    if e["fits"] and e["cases"] >= wrong_cases and e["informative"] >= MIN_INFORMATIVE
                    and all(r.ok or e["variant"].key in keys[id(r)] for r in usable)]
        kinds = {e["variant"].kind for e in matching}
        if len(kinds) == 1:
            best = matching[0]
            variant = best["variant"]
            alpha = sum(best["alphas"]) / len(best["alphas"]) if variant.basis is not None else None
            wrong_targets = [n for n in self.names if any(not r.comparisons[n].ok for r in usable)]
            return Diagnosis(variant.kind, variant.sentence(alpha), True, op=variant.input,
                             follows=wrong_targets[1:],
                             evidence="fits", key=variant.key)
        if len(kinds) > 1:
            return Diagnosis(None, "", False, evidence=f"several different slips fit ({', '.join(sorted(kinds))})")
        if answer is not None:
            probed = self._probe(usable, answer)
            if probed is not None:
                return probed
        return Diagnosis(None, "", False)

    def _probe(self, usable, answer):
        """Call the student's code with one input changed: does the answer move as the right one does?"""
        up = self.graph.upstream
        name = self.names[0]
        base = max(usable, key=lambda r: r.expected[name].numel())
        gen = torch.Generator().manual_seed(20240615)
        forward_inputs = [n for n in self.graph.leaves if n != up and _is_float(base.inputs[n]) and n not in self.wrt
                          and not _is_constant_leaf(self.graph, n)]
        movable = [n for n in self.wrt if n != up and n in base.inputs] + forward_inputs  # not an intermediate
        ignores_forward = bool(movable)
        for n in movable:
            changed = dict(base.inputs)
            t = base.inputs[n]
            changed[n] = (torch.randn(t.shape, generator=gen, dtype=torch.float64) * (_spread(t) or 1.0)).to(t)
            got = self._call(answer, changed)
            if got is None:
                return None
            exp = self.expected(changed)[name]
            if compare(name, exp, base.expected[name]).ok:  # this input does not move the right answer either
                ignores_forward = False
                continue
            if not compare(name, got[name], base.got[name]).ok:
                ignores_forward = False
        if up is not None and up in base.inputs:
            doubled = dict(base.inputs)
            doubled[up] = 2 * base.inputs[up]
            got2 = self._call(answer, doubled)
            if got2 is None:
                return None
            g1, g2 = got2[name], base.got[name]
            if compare(name, g1, g2).ok and not compare(name, base.expected[name] * 2, base.expected[name]).ok:
                op = self.graph.consumers(up)[0]
                src = self.graph.names.grad(self.graph.consumers(up)[0].inputs[0])
                return Diagnosis("no_upstream", f"{name} does not change when the upstream gradient "
                                 f"{self.graph.names.show(up)} does: it is not multiplied by it. Fix: multiply the "
                                 f"local derivative by {self.graph.names.show(up)} (chain rule).", True, op=src,
                                 evidence=f"seen by calling it again with {self.graph.names.show(up)} doubled")
            if ignores_forward and not compare(name, g1, 2 * g2).ok:
                shown = ", ".join(self.graph.names.show(n) for n in movable)
                return Diagnosis("wrong_point", f"{name} does not depend on {shown} at all: it is computed from the "
                                 f"upstream gradient {self.graph.names.show(up)} alone. Fix: evaluate the local derivative "
                                 f"at the forward values ({shown} or the cache), then multiply it by "
                                 f"{self.graph.names.show(up)}.", True,
                                 evidence=f"seen by calling it again with {shown} changed")
        return None

    def _call(self, answer, inputs):
        try:
            return self._as_dict(answer(**inputs))
        except Exception:  # noqa: BLE001 - a probe that fails proves nothing; the diagnosis goes on without it
            return None

    # ---------------------------------------------------------------- the check
    def check(self, answer, cases, *, each=None, fail=None):
        """Run ``answer(**inputs)`` on every case, compare with autograd, and raise a diagnosed failure.

        cases: (label, inputs) pairs. each(name, got, expected, label): called for every gradient whose values are
        right (e.g. ``common.check_tensor`` to insist on dtype and device as well). fail(message, kind=...,
        gradient=...): how to raise (default: GradientError). Returns the CaseResults when everything is right.
        """
        results = []
        for label, inputs in cases:
            kept = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            expected = self.expected(kept)  # before the student's code runs: it may change its inputs in place
            results.append(self.compare_case(label, kept, answer(**inputs), expected))
        if all(r.ok for r in results):
            if each is not None:
                for r in results:
                    for n in self.names:
                        each(n, r.got[n], r.expected[n], r.label)
            return results
        message, kind, gradient = self.explain(results, answer)
        if fail is not None:
            fail(message, kind=kind, gradient=gradient)
        raise GradientError(message, kind=kind, gradient=gradient)

    def _nearest_loss_first(self):
        """The graded gradients ordered from the one nearest the loss (the first a backward pass computes)."""
        order = _backward_order(self.graph)
        return sorted(self.names, key=lambda n: order.index(self.wrt[self.names.index(n)]))

    def explain(self, results, answer=None):
        """(message, kind, gradient) for a failed check: the most informative failing case, then the diagnosis."""
        case = informative_case(results)
        name = next(n for n in self.names if not case.comparisons[n].ok)
        comparison = case.comparisons[name]
        structural = comparison.status == "error" or comparison.kind in ("nan", "shape", "transposed", "none", "type")
        # What the values alone show (all zeros, a sign, a factor) stands when every failing case shows it.
        plain_named = comparison.kind in ("zeros", "sign", "factor") and _consistent_kind(results, name, comparison.kind)
        found = Diagnosis(None, "", False) if structural or plain_named else self.diagnose(results, answer)
        failing = sum(not r.ok for r in results)
        tried = f"wrong in {failing} of {len(results)} cases tried"
        if found.named:
            wrong = [n for n in self._nearest_loss_first() if any(not r.comparisons[n].ok for r in results)]
            name = wrong[0] if wrong else name
            comparison = case.comparisons[name] if not case.comparisons[name].ok else comparison
            head = f"{name} is wrong ({case.label}): {found.sentence}"
            kind = found.kind
            k = len(results)
            if found.evidence == "fits":
                extra = [f"(the same on all {k} cases tried)" if failing == k else
                         f"(it fits all {k} cases tried; {failing} of them {'shows' if failing == 1 else 'show'} it)"]
            else:
                extra = [f"({found.evidence}; {tried})"]
            if len(wrong) > 1:
                extra.append(f"{', '.join(wrong[1:])} {'is' if len(wrong) == 2 else 'are'} wrong because of it.")
        else:
            plain = _scoped(comparison, self.graph)
            consistent = _consistent_kind(results, name, comparison.kind)
            kind = comparison.kind if consistent else "values"
            sentence = plain if consistent else _plain_values(comparison)
            head = f"{name} is wrong ({case.label}): {sentence}" if comparison.status != "error" else \
                f"{name} could not be checked ({case.label}): {sentence}"
            extra = [f"({tried})"]
        lines = [head, *("  " + e for e in extra), *("  " + d for d in comparison.details)]
        return "\n".join(lines), kind, name


def _is_constant_leaf(graph, name):
    for op in graph.consumers(name):
        i = op.inputs.index(name)
        if not n_differentiable(op, i):
            return True
    return False


def _spread(t):
    t = t.detach().double()
    return float(t.std()) if t.numel() > 1 else float(t.abs().mean())


def _like(inputs, wrt):
    """(dtype, device) of each graded gradient: its tensor's, or for an intermediate tensor the first float input's."""
    out = {}
    first = next((t for t in inputs.values() if _is_float(t)), None)
    for w in wrt:
        t = inputs.get(w, first)
        if isinstance(t, torch.Tensor):
            out[w] = (t.dtype, t.device)
        else:
            out[w] = (torch.float64, torch.device("cpu"))
    return out


def _tolerance(got, expected):
    floats = [t.dtype for t in (got, expected) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    coarsest = max(floats, key=lambda d: torch.finfo(d).eps) if floats else torch.float64
    return TOLERANCES.get(coarsest, TOLERANCES[torch.float32])


def _fits(variant, at, result):
    """(fits, informative elements, fitted α or None) of one variant on one case, over every graded gradient.

    For a one-parameter variant α is fitted by least squares over all graded gradients of the case, and the α·basis
    part must itself be visible (informative), so that a variant whose fitted α is ~0 does not count.
    """
    informative, num, den = 0, 0.0, 0.0
    parts = []
    for name, (value, basis) in at.items():
        got, exp = result.got[name], result.expected[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(exp.shape):
            return False, 0, None
        g, e = _grad64(got), _f64(exp)
        parts.append((name, g, e, value, basis, _tolerance(got, exp)))
        if basis is not None:
            num += float(((g - value) * basis).sum())
            den += float((basis * basis).sum())
    alpha = num / den if den > 0 else None
    if variant.basis is not None and alpha is None:
        return False, 0, None
    visible = 0
    for name, g, e, value, basis, (rtol, atol_rel) in parts:
        candidate = value if basis is None or alpha is None else value + alpha * basis
        scale = max(diagnose.scale_of(e), diagnose.scale_of(candidate))
        allowed = atol_rel * scale + rtol * e.abs()
        if not diagnose.within(g, candidate, rtol, atol_rel * scale):
            return False, 0, None
        informative += int(((candidate - e).abs() > INFORMATIVE_MARGIN * allowed).sum())
        if basis is not None and alpha is not None:
            visible += int(((alpha * basis).abs() > INFORMATIVE_MARGIN * allowed).sum())
    if variant.basis is not None and visible == 0:
        return False, 0, None
    return True, informative, alpha


def _nice(alpha):
    """α as a short number for a message: 2, −0.5, 0.01."""
    return float(f"{alpha:.3g}")


def _scoped(comparison, graph):
    """compare's diagnosis, without the ReLU-mask hints when the computation has no mask."""
    sentence = comparison.diagnosis or ""
    if not graph.has_mask() and "mask" in sentence:
        return _plain_values(comparison)
    return sentence


def _plain_values(comparison):
    """What is known without naming a mistake: the values differ, by this much, here."""
    where = f" at index {comparison.index}" if comparison.index else ""
    size = "" if comparison.max_abs_diff is None else f" by up to {comparison.max_abs_diff:.3g}{where}"
    return f"the shape is right but the values differ{size}. Check each factor of the chain rule against the expected values."


def _consistent_kind(results, name, kind):
    """Whether compare's diagnosis is the same kind on every failing case (a lone number can mislead by chance)."""
    kinds = {r.comparisons[name].kind for r in results if not r.comparisons[name].ok}
    if kind not in ("factor", "sign", "zeros"):
        return True
    return kinds == {kind}


def informative_case(results):
    """The failing case a message should come from: the one whose numbers show the most.

    A case with a single value (n = 1) hides patterns such as a missing sum over the batch or a one-hot row; so
    failing cases are ranked by how many values are wrong, then by how many values there are, and one with a
    single value comes last. Structural failures (None, a wrong shape, NaN) come first: they need no pattern.
    """
    failing = [r for r in results if not r.ok]
    if not failing:
        return None

    def score(r):
        c = next(r.comparisons[n] for n in r.comparisons if not r.comparisons[n].ok)
        exp = next(r.expected[n] for n in r.comparisons if not r.comparisons[n].ok)
        structural = c.status == "error" or c.kind in ("none", "type", "nan")
        size = sum(t.numel() for t in r.inputs.values() if isinstance(t, torch.Tensor))
        return (structural, exp.numel() > 1, _count_wrong(r), exp.numel(), size)

    return max(failing, key=score)


def _count_wrong(result):
    total = 0
    for n, c in result.comparisons.items():
        if c.ok:
            continue
        got, exp = result.got[n], result.expected[n]
        if isinstance(got, torch.Tensor) and got.shape == exp.shape:
            g, e = _grad64(got), _f64(exp)
            rtol, atol_rel = _tolerance(got, exp)
            total += int(((g - e).abs() > atol_rel * diagnose.scale_of(e) + rtol * e.abs()).sum())
        else:
            total += exp.numel()
    return total


# =========================================================================== the first wrong node
# right: the student's gradient is right. wrong: the first wrong gradient from the loss down, given a right
# upstream gradient. consequence: wrong only because a gradient above it is (the right local derivatives turn the
# student's upstream gradient into it). also wrong: wrong given a right (or the student's own) upstream gradient,
# below the first: a second mistake. unclear: wrong, but the student's gradients above it are not given, so where the
# mistake is cannot be told. unknown: not given (and not inferred).
STATUSES = ("right", "wrong", "consequence", "also wrong", "unclear", "unknown")


@dataclass
class TraceNode:
    """One gradient of the backward pass: ∂J/∂name, its status and (for the first wrong one) the diagnosis."""

    name: str
    label: str
    status: str
    note: str = ""
    known: bool = True


@dataclass
class Trace:
    """The backward pass of one case with every gradient marked. ``draw()`` returns a drawing (gradlab.graph).

    nodes: TraceNodes from the loss down; edges: (a, b) pairs, the gradient flowing from ∂J/∂a into ∂J/∂b.
    """

    nodes: list
    edges: list
    first: str | None
    diagnosis: Diagnosis | None
    title: str = "backward pass"

    @property
    def ok(self):
        return all(n.status in ("right", "unknown") for n in self.nodes)

    def status(self, name):
        return next(n.status for n in self.nodes if n.name == name)

    def explain(self):
        """A few lines for the student: the first wrong gradient, its diagnosis, and what follows from it."""
        if self.ok:
            return "Every gradient given is right."
        lines = []
        if self.first is not None:
            node = next(n for n in self.nodes if n.name == self.first)
            lines.append(f"The first wrong gradient is {node.label}" + (f": {node.note}" if node.note else "."))
        for status, verb in (("consequence", "wrong only because of it"), ("also wrong", "wrong for a reason of "
                             "{its} own as well"), ("unclear", "wrong, but the gradients above {it} are not given")):
            names = [n.label for n in self.nodes if n.status == status]
            if names:
                one = len(names) == 1
                text = verb.format(its="its" if one else "their", it="it" if one else "them")
                lines.append(f"{', '.join(names)} {'is' if one else 'are'} {text}.")
        return "\n".join(lines)

    def draw(self, **kwargs):
        """The backward graph with this trace's marks (gradlab.graph.draw_backward)."""
        from .graph import draw_backward

        return draw_backward(self, **kwargs)

    def _repr_svg_(self):
        return self.draw().svg


def locate(graph, inputs, grads=None, helpers=None, diagnosis=None):
    """Find the first wrong gradient of a backward pass, from the loss down, given a right upstream gradient.

    graph: the computation (a Graph). inputs: {leaf: tensor}, one case.
    grads: the student's gradients that are available, {tensor name: ∂J/∂tensor}: intermediate ones (``"z2"``,
      ``"a1"``) and parameters (``"W1"``); names not given are unknown (``layer_helpers`` builds ``helpers`` from a
      student's layer functions instead).
    helpers: the student's local backward functions, {op output name: fn(upstream, values) -> {input name:
      gradient}} (a tensor is accepted for an op with one input); each is called with the right upstream gradient
      and the right forward values (float64 tensors by name), so every wrong one is found, and the student's
      whole chain is composed from them to tell which later differences follow.
    diagnosis: with ``grads``, a named Diagnosis that ``Exercise.diagnose`` found over several cases (where one case
      cannot show a mistake, e.g. a single number per case): the trace marks where that mistake is on this case
      and what follows from it.

    Returns a Trace (statuses in STATUSES, ``first``, ``diagnosis``, ``explain()``, ``draw()``).
    """
    values = graph.forward(inputs)
    ref, upstream = graph.backward(values)
    order = [t for t in _backward_order(graph) if t in ref and t not in graph.data and t != graph.upstream]
    edges = [(op.out, i) for op in graph.ops for i in op.inputs if i in order and op.out in order]
    given = {k: v for k, v in (grads or {}).items() if isinstance(v, torch.Tensor) and k in ref}
    # Right within the precision of the inputs: a float32 case is judged with float32's tolerance, although the
    # pass itself runs in float64.
    dtype = _coarsest([*inputs.values(), *given.values()])
    if helpers is not None:
        return _trace_from_helpers(graph, values, ref, upstream, helpers, order, edges, dtype)
    grads = {k: _grad64(v) for k, v in given.items()}
    return _trace_from_grads(graph, values, ref, grads, order, edges, dtype, diagnosis)


def _coarsest(tensors):
    floats = [t.dtype for t in tensors if _is_float(t)]
    return max(floats, key=lambda d: torch.finfo(d).eps) if floats else None


def layer_helpers(graph, **functions):
    """helpers for ``locate`` from a student's layer functions, as lessons 5 and 7 write them.

    functions: linear_forward / linear_backward, relu_forward / relu_backward, sigmoid_forward / sigmoid_backward
    (``X_backward(dout, cache)`` with the cache from ``X_forward``; without a forward, the cache is the inputs).
    Ops with no student function are left to the right local derivative.
    """
    helpers = {}
    for op in graph.ops:
        kind = {Linear: "linear", ReLU: "relu", Sigmoid: "sigmoid"}.get(type(op))
        backward = functions.get(f"{kind}_backward") if kind else None
        if backward is None:
            continue
        forward = functions.get(f"{kind}_forward")

        def helper(g, values, op=op, forward=forward, backward=backward):
            args = [values[n] for n in op.inputs]
            cache = forward(*args)[1] if forward is not None else (tuple(args) if len(args) > 1 else args[0])
            out = backward(g, cache)
            return dict(zip(op.inputs, out)) if isinstance(out, (tuple, list)) else {op.inputs[0]: out}

        helpers[op.out] = helper
    return helpers


def _backward_order(graph):
    """Tensor names from the loss down: each after every tensor whose gradient flows into it (longest path)."""
    depth, seen = {graph.root: 0}, [graph.root]
    for op in reversed(graph.ops):
        if op.out not in depth:
            continue
        for i in op.inputs:
            depth[i] = max(depth.get(i, 0), depth[op.out] + 1)
            if i not in seen:
                seen.append(i)
    return sorted(seen, key=lambda t: (depth[t], seen.index(t)))


def _node_label(graph, t):
    """The loss by its name; every other tensor by its gradient's name (dz2, ∂J/∂σ)."""
    return graph.names.show(t) if t == graph.root else (graph.names.grad(t) or t)


def _same(a, b, dtype=None):
    """Whether ``a`` (a student's gradient) is ``b`` (a float64 reference) to within the tolerance of ``dtype``."""
    if not isinstance(a, torch.Tensor) or tuple(a.shape) != tuple(b.shape):
        return False
    return compare("g", _as_coarse(a, dtype), b).ok


def _as_coarse(a, dtype):
    """``a`` in ``dtype`` when that is the less precise one (compare then uses its tolerance)."""
    if dtype is not None and _is_float(a) and torch.finfo(dtype).eps > torch.finfo(a.dtype).eps:
        return a.to(dtype)
    return a


def _trace_from_grads(graph, values, ref, grads, order, edges, dtype=None, known_diagnosis=None):
    """Statuses from the student's gradients (some may be missing), explained by one usual mistake where one fits."""
    wrong_known = [t for t in order if t in grads and not _same(grads[t], ref[t], dtype)]
    known = lambda t: t in grads or t == graph.root  # noqa: E731

    def label(t):
        return _node_label(graph, t) if known(t) else f"{_node_label(graph, t)} (not given)"

    if not wrong_known:
        nodes = [TraceNode(t, label(t), "right" if known(t) else "unknown", known=known(t)) for t in order]
        return Trace(nodes, edges, None, None)
    targets = [t for t in order if t in grads]
    exercise = Exercise(graph, targets, name=tuple(targets))
    got = {t: _as_coarse(grads[t], dtype) for t in targets}
    result = CaseResult("case", {n: values[n] for n in graph.leaves}, got, {t: ref[t] for t in targets},
                        {t: compare(t, got[t], ref[t]) for t in targets})
    given = known_diagnosis is not None and known_diagnosis.named and known_diagnosis.key
    found = known_diagnosis if given else exercise.diagnose([result])
    marks, first, diagnosis = {}, None, None
    if found.named:
        first, changed = _variant_effect(exercise, result, graph, values, ref, key=found.key if given else None)
    if found.named and first is not None:
        diagnosis = found
        for t in order:
            if t == first:
                marks[t] = "wrong"
            elif t in changed:
                marks[t] = "consequence"
            elif known(t):
                marks[t] = "right" if t not in wrong_known else "also wrong"
            else:
                marks[t] = "unknown"
    else:
        # No usual mistake fits: go down from the loss with the student's own upstream gradients.
        for t in order:
            if not known(t):
                marks[t] = "unknown"
            elif t not in wrong_known:
                marks[t] = "right"
            else:
                from_upstream, gap = _from_student_upstream(graph, values, grads, ref, t)
                if from_upstream is not None and _same(got[t], from_upstream, dtype):
                    marks[t] = "consequence" if first is not None or gap else "right"
                elif first is None:
                    marks[t], first = "wrong", t
                else:
                    marks[t] = "unclear" if gap else "also wrong"
        diagnosis = _first_alone(graph, result, first, label(first), marks, order)
    nodes = [TraceNode(t, label(t), marks[t], diagnosis.sentence if t == first else "", known(t)) for t in order]
    return Trace(nodes, edges, first, diagnosis)


def _first_alone(graph, result, first, label, marks, order):
    """The diagnosis of the first wrong gradient on its own, when every gradient above it is right (or not given): a
    usual mistake in its local derivative where one fits, else what its values show."""
    above = order[:order.index(first)]
    if all(marks[t] in ("right", "unknown") for t in above):
        alone = Exercise(graph, first, name=first)
        found = alone.diagnose([CaseResult(result.label, result.inputs, {first: result.got[first]},
                                           {first: result.expected[first]}, {first: result.comparisons[first]})])
        if found.named:
            return Diagnosis(found.kind, found.sentence, True, op=first, evidence=found.evidence)
    got, expected = result.got[first], result.expected[first]
    if _is_float(got) and _is_float(expected):  # the values only: the pass runs in float64 whatever the case's dtype
        expected = expected.to(got.dtype)
    comparison = compare(label, got, expected)
    return Diagnosis(comparison.kind, _scoped(comparison, graph), False, op=first)


def _variant_effect(exercise, result, graph, values, ref, key=None):
    """(the tensor whose gradient the fitting variant makes wrong first, the tensors whose gradient it changes).

    key: that variant (found over several cases), which must fit this case too."""
    _, upstream = graph.backward(values)
    for variant, op, at in exercise.variant_values(result.inputs):
        if key is not None and variant.key != key:
            continue
        ok, informative, alpha = _fits(variant, at, result)
        if not ok or (key is None and informative < MIN_INFORMATIVE):
            continue
        local = op.vjp(values, upstream[op.index])
        delta = torch.zeros_like(local[variant.input]) if variant.value is None else variant.value - local[variant.input]
        if variant.basis is not None:
            delta = delta + alpha * variant.basis
        change = graph.propagate(values, op.index, variant.input, delta)
        changed = {t for t, d in change.items()
                   if t in ref and float(d.abs().max()) > 1e-9 * max(1.0, float(ref[t].abs().max()))}
        return variant.input, changed
    return None, set()


def _from_student_upstream(graph, values, grads, ref, target):
    """(∂J/∂target from the student's nearest given gradients above it through the right local derivatives,
    whether a gradient not given lies in between)."""
    total, gap = None, False
    for op in graph.consumers(target):
        if op.out == graph.root or op.out in grads:
            g = ref[op.out] if op.out == graph.root else grads[op.out]
            if tuple(g.shape) != tuple(ref[op.out].shape):  # a gradient of the wrong shape carries nothing further
                return None, False
        else:
            g, _ = _from_student_upstream(graph, values, grads, ref, op.out)
            gap = True
            if g is None:
                return None, True
        d = op.vjp(values, g).get(target)
        if d is not None:
            total = d if total is None else total + d
    return total, gap


def _trace_from_helpers(graph, values, ref, upstream, helpers, order, edges, dtype=None):
    """Statuses when the student's local backward functions are known."""
    own = {}  # input tensor -> (op, got): the op's local gradient for it is wrong given the right upstream
    for op in reversed(graph.ops):
        if op.out not in helpers or op.index not in upstream:
            continue
        right = op.vjp(values, upstream[op.index])
        try:
            out = _helper_output(helpers[op.out], upstream[op.index], values, op)
        except Exception as err:  # noqa: BLE001 - a helper that raises is a wrong node, reported as such
            for name in right:
                own.setdefault(name, (op, err))
            continue
        for name, r in right.items():
            if name not in out:  # a helper that does not give this gradient says nothing about it
                continue
            got = out[name]
            if not _same(got, r, dtype):
                own.setdefault(name, (op, got))
    chain = {graph.root: torch.ones_like(values[graph.root])}  # the student's own whole backward pass
    for op in reversed(graph.ops):
        g = chain.get(op.out)
        if g is None:
            continue
        out = None
        if op.out in helpers:
            try:
                out = _helper_output(helpers[op.out], g, values, op)
            except Exception:  # noqa: BLE001
                out = None
        else:
            out = op.vjp(values, g)
        for name, d in (out or {}).items():
            if isinstance(d, torch.Tensor) and name in ref and tuple(d.shape) == tuple(ref[name].shape):
                d = _grad64(d)
                chain[name] = chain[name] + d if name in chain else d
    first, diagnosis, marks, notes = None, None, {}, {}
    for t in order:
        if t in own:
            marks[t] = "wrong" if first is None else "also wrong"
            op, got = own[t]
            if isinstance(got, Exception):
                found = Diagnosis("exception", f"the local backward raised {type(got).__name__}: {got}.", False, op=t)
            else:
                found = _diagnose_local(graph, values, upstream, op, t, got, dtype)
            notes[t] = found.sentence
            if first is None:
                first, diagnosis = t, found
        elif t in chain and _same(chain[t], ref[t], dtype):
            marks[t] = "right"
        else:
            marks[t] = "consequence" if first is not None else "unknown"
    nodes = [TraceNode(t, _node_label(graph, t), marks[t], notes.get(t, "")) for t in order]
    return Trace(nodes, edges, first, diagnosis)


def _helper_output(helper, g, values, op):
    out = helper(g, values)
    if isinstance(out, torch.Tensor):
        out = {op.inputs[0]: out}
    return out if isinstance(out, dict) else {}


def _diagnose_local(graph, values, upstream, op, name, got, dtype=None):
    """Which usual mistake one op's local gradient shows, given the right upstream gradient."""
    g = upstream[op.index]
    local = op.vjp(values, g)
    right = local[name]
    label = graph.names.grad(name) or name
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(right.shape):
        c = compare(label, got, right)
        return Diagnosis(c.kind, c.diagnosis or "", False, op=name)
    fitting = {v.kind: v for v in op.variants(values, g, local, graph.names)
               if v.input == name and v.basis is None and v.value is not None
               and v.value.shape == right.shape and _same(got, v.value, dtype) and not _same(v.value, right, dtype)}
    if len(fitting) == 1:
        variant = next(iter(fitting.values()))
        return Diagnosis(variant.kind, variant.sentence(), True, op=name)
    c = compare(label, got, right)
    return Diagnosis(c.kind, _scoped(c, graph), False, op=name)
