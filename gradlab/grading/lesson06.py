"""Hidden checks of lesson 6 (a full MNIST network with PyTorch).

Every expected value is made before the student's function runs, from tensors it never sees (it gets copies),
with torch's own functions or autograd, or known by construction (the accuracy check builds logits whose right
rows it chose). The training-loop checks watch what the student's loop does with a model that records the rows
it is given, and replay the same mini-batches with the grader's own SGD steps.

The softmax-cross-entropy gradient is graded on every case first; then the message comes from the most informative
failing case and names a formula mistake only when one fits every case tried, from the computation declared once
for gradlab.variants (``LOSS``), with the fix in one sentence and the gradient drawn, marked, with the failure
(issue 15). No ReLU-mask hint is given for it: the computation has no mask.
"""
import math

import torch
import torch.nn.functional as F

from gradlab import variants as V
from gradlab.check import autograd_grads, compare
from gradlab.grading import common
from gradlab.grading.lesson01 import fail_with_trace
from gradlab.grading.lesson05 import grade

from . import mnist_run

NUM_CLASSES = 10
# Exercise cells meant to use autograd (the PyTorch training loop): the instructor's static scan does not flag
# their autograd use (gradlab.instructor.scan).
AUTOGRAD_ALLOWED = ("train_epoch",)


def _random_labels(gen, n, device, num_classes=NUM_CLASSES):
    return torch.randint(num_classes, (n,), generator=gen).to(device)


def _as_number(value, name, case):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            common.fail(f"`{name}` should return one number, but returned a tensor of shape {tuple(value.shape)} ({case}).",
                        kind="not a number")
        value = value.item()
    if isinstance(value, bool):
        common.fail(f"`{name}` should return a number, but returned {value} ({case}).", kind="not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        common.fail(f"`{name}` should return a number, but returned {type(value).__name__} ({case}).",
                    kind="not a number")


# --------------------------------------------------------------------------- accuracy
def _scored_rows(gen, n, dtype, device):
    """Random logits and labels where the check decides which rows are right: in a right row the label's logit is
    made the row's largest, in a wrong row it is set halfway between the row's largest and smallest."""
    logits = torch.randn(n, NUM_CLASSES, generator=gen, dtype=torch.float64)
    labels = torch.randint(NUM_CLASSES, (n,), generator=gen)
    right = torch.rand(n, generator=gen) < 0.5
    if n > 1:
        right[0], right[1] = True, False
    rows = torch.arange(n)
    top, bottom = logits.max(dim=1).values, logits.min(dim=1).values
    logits[rows, labels] = torch.where(right, top + 1.0, (top + bottom) / 2)
    return logits.to(dtype=dtype, device=device), labels.to(device), right.sum().item() / n


@common.graded
def check_accuracy(accuracy):
    """accuracy(logits, labels) is the fraction of rows whose largest logit is at the label."""
    for label, gen, n, dtype, device in common.cases(601, sizes=(1, 7, 64, 500)):
        logits, labels, expected = _scored_rows(gen, n, dtype, device)
        got = _as_number(common.call_student(accuracy, "accuracy", logits.clone(), labels.clone(), case=label),
                         "accuracy", label)
        if abs(got - expected) > 1e-6:
            hint, kind = "", "values"
            if abs(got - 100 * expected) < 1e-4 and expected > 0:
                hint, kind = " It looks like a percentage: return a fraction between 0 and 1.", "percentage"
            elif abs(got - (1 - expected)) < 1e-6:
                hint, kind = (" That is the error rate (1 − accuracy): count the rows where the prediction equals the "
                              "label."), "error rate"
            elif abs(got - expected * n) < 1e-4:
                hint, kind = " That is the number of correct rows: divide by the number of rows.", "count"
            common.fail(f"accuracy is {got} but should be {expected} ({label}).{hint}", kind=kind)


# --------------------------------------------------------------------------- the nearest-mean baseline
@common.graded
def check_class_means(class_means):
    """class_means(X, y, num_classes) is the (num_classes, D) matrix whose row k is the mean of the rows of X
    labelled k, in X's dtype and on its device."""
    for label, gen, n, dtype, device in common.cases(602, sizes=(10, 37, 300)):
        k = 4 if n == 37 else NUM_CLASSES  # not always 10: num_classes must be used
        d = 3 + n % 11
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        y = torch.cat([torch.arange(k), torch.randint(k, (n - k,), generator=gen)])
        y = y[torch.randperm(n, generator=gen)].to(device)
        expected = torch.zeros(k, d, dtype=dtype, device=device).scatter_reduce(
            0, y[:, None].expand(n, d), X, reduce="mean", include_self=False)
        case = f"{label}, num_classes={k}"
        got = common.call_student(class_means, "class_means", X.clone(), y.clone(), k, case=case)
        common.check_tensor("class means", got, expected, case, derivative=False)


@common.graded
def check_squared_distances(squared_distances):
    """squared_distances(X, M)[i, k] = ||X[i] − M[k]||², shape (N, K), in X's dtype and on its device."""
    for label, gen, n, dtype, device in common.cases(603, sizes=(1, 7, 200)):
        d, k = 5 + n % 7, 3 + n % 8
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        M = common.randn(gen, k, d, dtype=dtype, device=device)
        expected = torch.cdist(X, M, compute_mode="donot_use_mm_for_euclid_dist") ** 2
        got = common.call_student(squared_distances, "squared_distances", X.clone(), M.clone(), case=label)
        common.check_tensor("squared distances", got, expected, label, derivative=False, batch=False)


# --------------------------------------------------------------------------- the gradient of the loss
_OFFSETS = {
    "": lambda n: torch.zeros(n, 1),
    ", every row's logits shifted by +500": lambda n: torch.full((n, 1), 500.0),
    ", rows' logits 1000 apart (near +500 and near −500)": lambda n: 500.0 * (1 - 2 * (torch.arange(n) % 2))[:, None],
}


#: The computation the gradient belongs to, declared once for the diagnosis (gradlab.variants): the mean
#: cross-entropy of the logits against integer labels, as F.cross_entropy computes it.
LOSS = V.Exercise(V.Graph(V.CrossEntropy("L", "logits", "labels"), grad_notation={"logits": "dL/dlogits"}),
                  "logits", name="dL/dlogits")


@common.graded
def check_softmax_cross_entropy_grad(softmax_cross_entropy_grad):
    """The gradient of the mean cross-entropy F.cross_entropy(logits, labels) with respect to the logits, against
    autograd, finite for logits far from 0 and for rows far apart from each other, in the logits' dtype.

    Every case first; inf or NaN is named at the first case that shows it, anything else from the most informative
    failing case, with the usual formula mistake that fits every case (``LOSS``)."""
    runs = []
    for label, gen, n, dtype, device in common.cases(604, sizes=(1, 7, 64)):
        for what, offset in _OFFSETS.items():
            c = 3 + n % 8
            logits = (common.randn(gen, n, c, dtype=dtype, device=device, scale=3.0)
                      + offset(n).to(dtype=dtype, device=device))
            labels = _random_labels(gen, n, device, c)
            (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
            case = label + what
            got = common.call_student(softmax_cross_entropy_grad, "softmax_cross_entropy_grad", logits.clone(),
                                      labels.clone(), case=case)
            runs.append((case, {"logits": logits, "labels": labels}, got, {"dL/dlogits": expected}))
    for case, _, got, expected in runs:
        if (isinstance(got, torch.Tensor) and got.shape == expected["dL/dlogits"].shape and got.is_floating_point()
                and not bool(torch.isfinite(got).all())):
            common.fail(
                f"dL/dlogits holds inf or NaN ({case}). e^z overflows for large logits, and after subtracting one "
                "maximum for the whole batch a row far below it gives e^(−1000) = 0 everywhere and 0/0. Subtract "
                "each row's own largest logit, logits.max(dim=1, keepdim=True).values, before exponentiating "
                "(torch.softmax does that for you).",
                kind="overflow", gradient="dL/dlogits")
    _divided_by_classes(runs)
    grade(LOSS, runs, lambda label, got, expected: common.check_tensor("dL/dlogits", got, expected["dL/dlogits"], label))


def _divided_by_classes(runs):
    """Every failing case is the gradient divided by the number of classes C as well (a mean over all N·C logits,
    where the loss is a mean over the N rows): say so, from the largest failing case where C is not N (a plain
    "1/C ×" would call C the batch size)."""
    failing = []
    for case, _, got, expected in runs:
        expected = expected["dL/dlogits"]
        if compare("dL/dlogits", got, expected).ok:
            continue
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
            return
        n, c = expected.shape
        if not compare("dL/dlogits", got * c, expected).ok:
            return
        failing.append((case, got, expected, n, c))
    shown = [f for f in failing if f[3] != f[4]]
    if not shown:
        return
    case, got, expected, n, c = max(shown, key=lambda f: f[2].numel())
    details = ["  " + line for line in compare("dL/dlogits", got, expected).details]
    fail_with_trace("\n".join([
        f"dL/dlogits is wrong ({case}): every value is 1/{c} × the expected one, and {c} is the number of classes C "
        f"here: it is divided by N·C = {n * c} (a mean over every logit), but the loss is the mean over the N = {n} "
        f"rows only. Fix: divide by N = logits.shape[0], not by logits.numel().",
        f"  (the same in all {len(failing)} cases that fail)", *details]), "factor", "dL/dlogits", None, case)


# --------------------------------------------------------------------------- one epoch of training
class _Recorder(torch.nn.Module):
    """Logits = a fixed table row per example (column 0 of the input holds the row number) + a linear layer on the
    other columns. It remembers which rows it was given, in order, whenever autograd is on, so that the grader knows
    the mini-batches the student's loop made and can take the same SGD steps on its own copy."""

    def __init__(self, table, d):
        super().__init__()
        self.table = table
        with torch.random.fork_rng(devices=[]):  # leave the student's random state alone
            self.linear = torch.nn.Linear(d, table.shape[1]).to(dtype=table.dtype, device=table.device)
        self.seen = []

    def __gradlab_state__(self):  # the grader's replay needs the rows the student's loop fed in
        return [rows.tolist() for rows in self.seen]

    def __gradlab_restore__(self, seen):
        self.seen = [torch.tensor(rows, dtype=torch.long) for rows in seen or []]

    def forward(self, x):
        rows = x[:, 0].round().long()
        if torch.is_grad_enabled():
            self.seen.append(rows.detach().cpu())
        return self.table[rows] + self.linear(x[:, 1:])


def _logits(W, b, X, table, rows):
    return table[rows] + X[rows, 1:] @ W.T + b


def _sgd(W, b, X, y, table, batches, lr, accumulate=False, labels=None):
    """The grader's SGD on its own copy, one step per batch (gradients from autograd); returns (W, b, batch losses).

    accumulate: gradients add up from batch to batch (no zero_grad). labels: the labels each batch uses, when they
    are not y[rows]."""
    losses, gW, gb = [], torch.zeros_like(W), torch.zeros_like(b)
    for k, rows in enumerate(batches):
        target = y[rows] if labels is None else labels[k]
        losses.append(F.cross_entropy(_logits(W, b, X, table, rows), target).item())
        dW, db = autograd_grads(lambda W_, b_: F.cross_entropy(_logits(W_, b_, X, table, rows), target), W, b)
        gW, gb = (gW + dW, gb + db) if accumulate else (dW, db)
        W, b = W - lr * gW, b - lr * gb
    return W, b, losses


def _one_step(W, b, X, y, table, batches, lr, how):
    """One optimiser step per epoch, three ways a loop can end up there."""
    def batch_loss(W_, b_, rows):
        return F.cross_entropy(_logits(W_, b_, X, table, rows), y[rows])

    if how == "whole epoch":
        everything = torch.cat(batches)
        dW, db = autograd_grads(lambda W_, b_: batch_loss(W_, b_, everything), W, b)
    else:
        grads = [autograd_grads(lambda W_, b_, r=rows: batch_loss(W_, b_, r), W, b) for rows in batches]
        dW, db = (sum(g[i] for g in grads) for i in (0, 1))
        if how == "mean of batches":
            dW, db = dW / len(batches), db / len(batches)
    return W - lr * dW, b - lr * db


def _close(got, expected):
    return compare("w", got, expected).ok


@common.graded
def check_train_epoch(train_epoch):
    """train_epoch(model, optimizer, X, y, batch_size, generator) -> mean loss: one shuffled pass, one SGD step per
    mini-batch, and the mean of the batch losses weighted by batch size."""
    for device in common.devices():
        _check_epochs(train_epoch, device)


def _check_epochs(train_epoch, device):
    gen = torch.Generator().manual_seed(606)
    n, batch_size, c, d, lr = 100, 16, 4, 3, 0.5  # 16 does not divide 100: the last batch holds 4 rows
    X = torch.cat([torch.arange(n, dtype=torch.float64)[:, None], torch.randn(n, d, generator=gen, dtype=torch.float64)], 1)
    X, y = X.to(device), _random_labels(gen, n, device, c)
    table = common.randn(gen, n, c, dtype=torch.float64, device=device, scale=2.0)
    model = _Recorder(table, d)
    with torch.no_grad():
        model.linear.weight.copy_(common.randn(gen, c, d, dtype=torch.float64, device=device))
        model.linear.bias.copy_(common.randn(gen, c, dtype=torch.float64, device=device))
    W, b = model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    X_mine, y_mine = X.clone(), y.clone()  # the grader's own copies: the student's loop gets X and y
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    case = f"{n} rows, batch_size={batch_size}, SGD lr={lr}, float64, {device.type}"
    orders = []
    for epoch in (1, 2):
        model.seen = []
        loss = common.call_student(
            train_epoch, "train_epoch", model, optimizer, X, y, batch_size, torch.Generator().manual_seed(10 + epoch),
            case=f"{case}, epoch {epoch}", mutable=(0, 1, 5), by_hand=False,
        )
        where = f"{case}, epoch {epoch}"
        batches = [rows.to(device) for rows in model.seen]
        _check_batches(batches, n, batch_size, where)
        orders.append(torch.cat(batches).cpu())
        W_end, b_end, losses = _sgd(W, b, X_mine, y_mine, table, batches, lr)
        got_W, got_b = model.linear.weight.detach(), model.linear.bias.detach()
        if not (_close(got_W, W_end) and _close(got_b, b_end)):
            _explain_weights(got_W, got_b, W, b, X_mine, y_mine, table, batches, lr, batch_size, where, epoch)
        loss = _as_number(loss, "train_epoch", where)
        _check_epoch_loss(loss, losses, [len(rows) for rows in batches], n, batch_size, where)
        W, b = W_end, b_end
    if torch.equal(orders[0], torch.arange(n)) or torch.equal(orders[0], orders[1]):
        common.fail(
            f"the rows should come in a new random order every epoch; they came in the order {orders[0][:12].tolist()}… "
            f"in epoch 1 and {orders[1][:12].tolist()}… in epoch 2 ({case}). Draw a fresh permutation each epoch, "
            "from the generator you are given: minibatches(len(X), batch_size, generator, X.device).",
            kind="not shuffled")


def _check_batches(batches, n, batch_size, where):
    sizes = [len(rows) for rows in batches]
    calls = math.ceil(n / batch_size)
    if not sizes or max(sizes) > batch_size or len(sizes) != calls:
        common.fail(
            f"train_epoch should call the model once per mini-batch of at most {batch_size} rows, {calls} calls for "
            f"{n} rows (the last batch is smaller), but the batch sizes were {sizes} ({where}).",
            kind="batches")
    used = torch.cat(batches).cpu()
    if sorted(used.tolist()) != list(range(n)):
        common.fail(
            f"in one epoch every row should be used exactly once; the rows used were {used.tolist()} ({where}). "
            "Take the batches as slices of one permutation.",
            kind="rows")


def _explain_weights(got_W, got_b, W, b, X, y, table, batches, lr, batch_size, where, epoch):
    """The weights after the epoch are not those of one SGD step per batch: say which known loop they match."""
    def matches(params):
        return _close(got_W, params[0]) and _close(got_b, params[1])

    if matches((W, b)):
        common.fail(
            f"the weights did not change in this epoch ({where}). For each batch: optimizer.zero_grad(), "
            "loss.backward(), then optimizer.step() (zeroing between backward and step throws the gradient away).",
            kind="no step")
    if any(matches(_one_step(W, b, X, y, table, batches, lr, how)) for how in ("whole epoch", "sum of batches",
                                                                              "mean of batches")):
        common.fail(
            f"the weights moved by one optimizer step for the whole epoch, not one step per mini-batch ({where}). "
            "Call loss.backward() and optimizer.step() inside the loop, once for every batch.",
            kind="one step per epoch")
    if epoch == 1 and matches(_sgd(W, b, X, y, table, batches, lr, accumulate=True)[:2]):
        common.fail(
            f"the weights match steps whose gradients add up from batch to batch ({where}): backward() adds to "
            ".grad, so call optimizer.zero_grad() before every loss.backward().",
            kind="zero_grad")
    by_position = [y[start:start + len(rows)] for start, rows in zip(range(0, len(y), batch_size), batches)]
    if matches(_sgd(W, b, X, y, table, batches, lr, labels=by_position)[:2]):
        common.fail(
            f"the weights match steps where each batch's images were paired with the wrong labels ({where}): the "
            "labels came from y[start:start + batch_size] while the images came from the shuffled indices. "
            "Slice X and y with the same indices.",
            kind="labels misaligned")
    expected_W, expected_b, _ = _sgd(W, b, X, y, table, batches, lr)
    common.check_grad("weight after the epoch", got_W, expected_W, where)
    common.check_grad("bias after the epoch", got_b, expected_b, where)
    common.fail(f"the weights after the epoch are not those of one SGD step per batch ({where}).", kind="weights")


def _check_epoch_loss(loss, losses, sizes, n, batch_size, where):
    expected = sum(l * s for l, s in zip(losses, sizes)) / n
    if abs(loss - expected) <= 1e-6 * max(1.0, abs(expected)):  # a float32 running total is fine
        return
    known = {
        "the sum of the batch losses times the nominal batch size, over N: the last batch holds fewer rows, so "
        "multiply each batch's loss by its own size, len(idx)": sum(losses) * batch_size / n,
        "the mean of the batch means: with a smaller last batch that weighs its rows too much; multiply each "
        "batch's loss by its size, add up, and divide by N": sum(losses) / len(losses),
        "the last batch's loss: add up every batch's loss times its size, and divide by N at the end": losses[-1],
        "the sum of the batch losses: multiply each by its batch size and divide the total by N": sum(losses),
        "the sum of the batch losses times their sizes: divide it by N": expected * n,
    }
    hint = next((why for why, value in known.items() if abs(loss - value) <= 1e-6 * max(1.0, abs(value))), None)
    common.fail(
        f"train_epoch returned a mean loss of {loss}, but the mean of the batch losses weighted by batch size is "
        f"{expected} ({where}). " + (f"That is {hint}." if hint else
                                     "Return the mean of the batch losses, each weighted by its batch size: the "
                                     "loss of each batch (before its step) times len(idx), added up, divided by N."),
        kind="epoch loss")


# --------------------------------------------------------------------------- the accuracy threshold
@common.graded
def check_mnist_training(train_epoch, epochs=4, threshold=0.92, budget_s=40.0):
    """A fresh 784-128-64-10 network trained with the student's train_epoch reaches ``threshold`` on held-out
    MNIST images within ``budget_s`` seconds of the student's code (the grader's settings, lesson 6's epochs)."""
    run = mnist_run.prepare()
    X, y = run.X.clone(), run.y.clone()  # the cached data stays clean whatever the student's code does
    model = mnist_run.torch_network(run.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=mnist_run.LR, momentum=mnist_run.MOMENTUM)
    gen = torch.Generator().manual_seed(mnist_run.SEED)
    slow = "Work on whole mini-batches with tensor operations, not on single images."
    start = common.student_seconds()
    with mnist_run.one_cpu_thread():
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = mnist_run.learning_rate(epoch)
            common.call_student(
                train_epoch, "train_epoch", model, optimizer, X, y, mnist_run.BATCH_SIZE, gen,
                case=f"MNIST, epoch {epoch + 1}", mutable=(0, 1, 5), by_hand=False, seconds=budget_s,
                timeout_hint=slow,
            )
            spent = common.student_seconds() - start
            if spent > budget_s:
                common.fail(f"training is too slow: {epoch + 1} of {epochs} epochs took {spent:.1f} s, over the budget "
                            f"of {budget_s:.0f} s. {slow}", kind="too slow")
    with torch.no_grad():
        acc = (model(run.X_test).argmax(dim=1) == run.y_test).double().mean().item()
    if not acc >= threshold:
        common.fail(f"after {epochs} epochs the network is right on {100 * acc:.2f}% of the held-out test images; it "
                    f"should reach at least {100 * threshold:.0f}%. Check that every mini-batch takes a step and that "
                    "the loss goes down from epoch to epoch.", kind="accuracy")
