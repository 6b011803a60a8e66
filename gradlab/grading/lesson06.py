"""Hidden checks of lesson 6 (a full MNIST network with PyTorch)."""
import time

import torch
import torch.nn.functional as F

from gradlab.check import autograd_grads, check_grad
from gradlab.grading import common

from . import mnist_run

NUM_CLASSES = 10


def _random_labels(gen, n, device, num_classes=NUM_CLASSES):
    return torch.randint(num_classes, (n,), generator=gen).to(device)


def _as_number(value, name, case):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise AssertionError(f"`{name}` should return one number, but returned a tensor of shape {tuple(value.shape)} ({case}).")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"`{name}` should return a number, but returned {type(value).__name__} ({case}).") from None


@common.graded
def check_accuracy(accuracy):
    """accuracy(logits, labels) is the fraction of rows whose largest logit is at the label."""
    for label, gen, n, dtype, device in common.cases(601, sizes=(1, 7, 64, 500)):
        logits = common.randn(gen, n, NUM_CLASSES, dtype=dtype, device=device)
        labels = _random_labels(gen, n, device)
        if n > 1:  # make sure some rows are right, so that a constant answer cannot pass
            labels[: n // 2] = logits[: n // 2].argmax(dim=1)
        expected = (logits.argmax(dim=1) == labels).double().mean().item()
        got = _as_number(common.call_student(accuracy, "accuracy", logits, labels, case=label), "accuracy", label)
        if abs(got - expected) > 1e-6:
            hint = ""
            if abs(got - 100 * expected) < 1e-4:
                hint = " It looks like a percentage: return a fraction between 0 and 1."
            elif abs(got - (1 - expected)) < 1e-6:
                hint = " That is the error rate (1 − accuracy): count the rows where the prediction equals the label."
            elif abs(got - expected * n) < 1e-4:
                hint = " That is the number of correct rows: divide by the number of rows."
            raise AssertionError(f"accuracy is {got} but should be {expected} ({label}).{hint}")


@common.graded
def check_class_means(class_means):
    """class_means(X, y) is the (10, D) matrix whose row k is the mean of the rows of X labelled k."""
    for label, gen, n, dtype, device in common.cases(602, sizes=(10, 37, 300)):
        d = 3 + n % 11
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        y = torch.cat([torch.arange(NUM_CLASSES), torch.randint(NUM_CLASSES, (n - NUM_CLASSES,), generator=gen)])
        y = y[torch.randperm(n, generator=gen)].to(device)
        expected = torch.stack([X[y == k].mean(dim=0) for k in range(NUM_CLASSES)])
        got = common.call_student(class_means, "class_means", X, y, case=label)
        check_grad("class means", got, expected, context=label)


@common.graded
def check_squared_distances(squared_distances):
    """squared_distances(X, M)[i, k] = ||X[i] − M[k]||², shape (N, K)."""
    for label, gen, n, dtype, device in common.cases(603, sizes=(1, 7, 200)):
        d, k = 5 + n % 7, 3 + n % 8
        X = common.randn(gen, n, d, dtype=dtype, device=device)
        M = common.randn(gen, k, d, dtype=dtype, device=device)
        expected = ((X[:, None, :] - M[None, :, :]) ** 2).sum(dim=2)
        got = common.call_student(squared_distances, "squared_distances", X, M, case=label)
        check_grad("squared distances", got, expected, context=label)


@common.graded
def check_softmax_cross_entropy_grad(softmax_cross_entropy_grad):
    """The gradient of the mean cross-entropy with respect to the logits, against autograd."""
    for label, gen, n, dtype, device in common.cases(604, sizes=(1, 7, 64)):
        for shift, what in ((0.0, ""), (500.0, ", logits shifted by +500")):
            c = 3 + n % 8
            logits = common.randn(gen, n, c, dtype=dtype, device=device, scale=3.0) + shift
            labels = _random_labels(gen, n, device, c)
            (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
            got = common.call_student(
                softmax_cross_entropy_grad, "softmax_cross_entropy_grad", logits, labels, case=label + what
            )
            check_grad("dL/dlogits", got, expected, context=label + what)


@common.graded
def check_train_epoch(train_epoch):
    """train_epoch(model, optimizer, X, y, batch_size, generator) -> mean loss: one shuffled pass."""
    for device in common.devices():
        _check_batches_cover_the_data(train_epoch, device)
        _check_full_batch_steps(train_epoch, device)


def _check_full_batch_steps(train_epoch, device):
    """With one batch holding all the data, an epoch is exactly one gradient step, whatever the order."""
    gen = torch.Generator().manual_seed(605)
    n, d, c, lr = 24, 5, 3, 0.5
    X = common.randn(gen, n, d, dtype=torch.float64, device=device)
    y = _random_labels(gen, n, device, c)
    with torch.random.fork_rng(devices=[]):  # leave the student's random state alone
        model = torch.nn.Linear(d, c).to(device=device, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(common.randn(gen, c, d, dtype=torch.float64, device=device))
        model.bias.copy_(common.randn(gen, c, dtype=torch.float64, device=device))
    W, b = model.weight.detach().clone(), model.bias.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    case = f"one batch of all {n} rows, SGD lr={lr}, float64, {device.type}"
    for epoch in (1, 2):
        start_loss = F.cross_entropy(X @ W.T + b, y).item()
        dW, db = autograd_grads(lambda W_, b_: F.cross_entropy(X @ W_.T + b_, y), W, b)
        W, b = W - lr * dW, b - lr * db
        loss = common.call_student(
            train_epoch, "train_epoch", model, optimizer, X, y, n, torch.Generator().manual_seed(epoch), case=case,
            mutable=(0, 1, 5), by_hand=False,
        )
        context = f"{case}, after epoch {epoch}"
        if epoch == 2:
            context += " (epoch 1 was right: if only epoch 2 is wrong, are old gradients cleared with optimizer.zero_grad()?)"
        check_grad("weight", model.weight.detach(), W, context=context)
        check_grad("bias", model.bias.detach(), b, context=context)
        loss = _as_number(loss, "train_epoch", case)
        if abs(loss - start_loss) > 1e-6 * max(1.0, abs(start_loss)):
            raise AssertionError(
                f"train_epoch returned {loss} but the epoch's mean loss was {start_loss} ({context}). "
                "Return the mean of the mini-batch losses, each weighted by its batch size."
            )


class _Recorder(torch.nn.Module):
    """A model that remembers which rows it was given (column 0 holds the row number) and always answers
    the same logits for the same row, so that the mean loss of an epoch is known in advance."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.unused = torch.nn.Parameter(torch.zeros((), dtype=table.dtype, device=table.device))
        self.seen = []

    def __gradlab_state__(self):  # the grader's replay needs the rows the student's loop fed in
        return list(self.seen)

    def __gradlab_restore__(self, seen):
        self.seen = list(seen)

    def forward(self, x):
        rows = x[:, 0].round().long()
        if torch.is_grad_enabled():
            self.seen.append(rows.cpu())
        return self.table[rows] + 0 * self.unused


def _check_batches_cover_the_data(train_epoch, device):
    gen = torch.Generator().manual_seed(606)
    n, batch_size, c = 96, 16, 4
    X = torch.cat([torch.arange(n, dtype=torch.float64)[:, None], torch.randn(n, 3, generator=gen, dtype=torch.float64)], 1)
    X, y = X.to(device), _random_labels(gen, n, device, c)
    table = common.randn(gen, n, c, dtype=torch.float64, device=device)
    expected_loss = F.cross_entropy(table, y).item()
    model = _Recorder(table)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    case = f"{n} rows, batch_size={batch_size}, {device.type}"
    orders = []
    for epoch in (1, 2):
        model.seen = []
        loss = common.call_student(
            train_epoch, "train_epoch", model, optimizer, X, y, batch_size, torch.Generator().manual_seed(10 + epoch),
            case=case, mutable=(0, 1, 5), by_hand=False,
        )
        sizes = [len(b) for b in model.seen]
        if not sizes or any(s > batch_size for s in sizes) or len(sizes) != n // batch_size:
            raise AssertionError(
                f"train_epoch should call the model once per mini-batch of at most {batch_size} rows "
                f"({n // batch_size} calls for {n} rows), but the batch sizes were {sizes} ({case}, epoch {epoch})."
            )
        order = torch.cat(model.seen)
        if sorted(order.tolist()) != list(range(n)):
            raise AssertionError(
                f"in one epoch every row should be used exactly once; the rows used were {order.tolist()} "
                f"({case}, epoch {epoch}). Take the batches as slices of one permutation."
            )
        orders.append(order)
        loss = _as_number(loss, "train_epoch", case)
        if abs(loss - expected_loss) > 1e-6:
            raise AssertionError(
                f"train_epoch returned a mean loss of {loss}, but the loss of the rows it used, with their labels, "
                f"is {expected_loss} ({case}, epoch {epoch}). Slice X and y with the same indices, and return the "
                "mean of the batch losses weighted by batch size."
            )
    if torch.equal(orders[0], torch.arange(n)) or torch.equal(orders[0], orders[1]):
        raise AssertionError(
            f"the rows should come in a new random order every epoch; they came in the order {orders[0][:12].tolist()}… "
            f"in epoch 1 and {orders[1][:12].tolist()}… in epoch 2 ({case}). Draw a fresh permutation each epoch."
        )


@common.graded
def check_mnist_training(train_epoch, epochs=4, threshold=0.92, budget_s=40.0):
    """A fresh 784-128-64-10 network trained with the student's train_epoch reaches ``threshold`` on held-out
    MNIST images within ``budget_s`` seconds."""
    run = mnist_run.prepare()
    model = mnist_run.torch_network(run.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=mnist_run.LR, momentum=mnist_run.MOMENTUM)
    gen = torch.Generator().manual_seed(mnist_run.SEED)
    with mnist_run.one_cpu_thread():
        start = time.perf_counter()
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = mnist_run.learning_rate(epoch)
            common.call_student(
                train_epoch, "train_epoch", model, optimizer, run.X, run.y, mnist_run.BATCH_SIZE, gen,
                case=f"MNIST, epoch {epoch + 1}", mutable=(0, 1, 5), by_hand=False,
            )
            mnist_run.check_time(start, budget_s, epoch + 1, epochs)
    with torch.no_grad():
        acc = (model(run.X_test).argmax(dim=1) == run.y_test).double().mean().item()
    mnist_run.check_accuracy(acc, threshold, epochs)
