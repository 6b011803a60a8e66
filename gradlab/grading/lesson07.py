"""Hidden checks of lesson 7 (capstone: the MNIST network trained with the student's own backprop).

Parameters are a dict {"W1", "b1", "W2", "b2", "W3", "b3"} with W of shape (D_in, D_out), as in lesson 5.
Every gradient is compared with torch autograd on the same inputs.
"""
import time

import torch
import torch.nn.functional as F

from gradlab.check import autograd_grads, check_grad
from gradlab.grading import common
from gradlab.training import minibatches

from . import mnist_run

NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")


def _network(params, x):
    """The reference forward pass: linear → ReLU → linear → ReLU → linear."""
    h = torch.relu(x @ params["W1"] + params["b1"])
    h = torch.relu(h @ params["W2"] + params["b2"])
    return h @ params["W3"] + params["b3"]


def _random_params(gen, sizes, dtype, device):
    params = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = common.randn(gen, d_in, d_out, dtype=dtype, device=device, scale=d_in**-0.5)
        params[f"b{i}"] = common.randn(gen, d_out, dtype=dtype, device=device, scale=0.1)
    return params


def _sizes(n):
    """Layer widths that change with the case, so nothing tied to 784-128-64-10 passes by accident."""
    return (6 + n % 9, 9 + n % 4, 5 + n % 6, 3 + n % 5)


def _pair(result, name, what, case):
    if not isinstance(result, tuple) or len(result) != 2:
        raise AssertionError(f"`{name}` should return a pair ({what}), but returned {type(result).__name__} ({case}).")
    return result


def _forward_output(forward_fn, name, args, expected, case):
    out, cache = _pair(common.call_student(forward_fn, name, *args, case=case), name, "output, cache", case)
    check_grad(f"{name} output", out, expected, context=case)
    return cache


@common.graded
def check_linear_forward(linear_forward):
    for label, gen, n, dtype, device in common.cases(701):
        d_in, d_out = 3 + n % 5, 2 + n % 4
        x = common.randn(gen, n, d_in, dtype=dtype, device=device)
        W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
        b = common.randn(gen, d_out, dtype=dtype, device=device)
        _forward_output(linear_forward, "linear_forward", (x, W, b), x @ W + b, label)


@common.graded
def check_linear_backward(linear_forward, linear_backward):
    for label, gen, n, dtype, device in common.cases(702):
        d_in, d_out = 3 + n % 5, 2 + n % 4
        x = common.randn(gen, n, d_in, dtype=dtype, device=device)
        W = common.randn(gen, d_in, d_out, dtype=dtype, device=device)
        b = common.randn(gen, d_out, dtype=dtype, device=device)
        dout = common.randn(gen, n, d_out, dtype=dtype, device=device)
        cache = _forward_output(linear_forward, "linear_forward", (x, W, b), x @ W + b, label)
        got = common.call_student(linear_backward, "linear_backward", dout, cache, case=label)
        if not isinstance(got, tuple) or len(got) != 3:
            raise AssertionError(f"`linear_backward` should return (dx, dW, db), but returned {type(got).__name__} ({label}).")
        expected = autograd_grads(lambda x_, W_, b_: ((x_ @ W_ + b_) * dout).sum(), x, W, b)
        for name, g, e in zip(("dx", "dW", "db"), got, expected):
            check_grad(name, g, e, context=label)


@common.graded
def check_relu_forward(relu_forward):
    for label, gen, n, dtype, device in common.cases(703):
        x = common.randn(gen, n, 5, dtype=dtype, device=device)
        _forward_output(relu_forward, "relu_forward", (x,), torch.relu(x), label)


@common.graded
def check_relu_backward(relu_forward, relu_backward):
    for label, gen, n, dtype, device in common.cases(704):
        x = common.randn(gen, n, 5, dtype=dtype, device=device)
        dout = common.randn(gen, n, 5, dtype=dtype, device=device)
        cache = _forward_output(relu_forward, "relu_forward", (x,), torch.relu(x), label)
        got = common.call_student(relu_backward, "relu_backward", dout, cache, case=label)
        (expected,) = autograd_grads(lambda x_: (torch.relu(x_) * dout).sum(), x)
        check_grad("dx", got, expected, context=label)


@common.graded
def check_softmax_cross_entropy(softmax_cross_entropy):
    """(loss, dlogits): the mean cross-entropy and its gradient, also for logits far from 0."""
    for label, gen, n, dtype, device in common.cases(705):
        for shift, what in ((0.0, ""), (500.0, ", logits shifted by +500")):
            c = 3 + n % 8
            logits = common.randn(gen, n, c, dtype=dtype, device=device, scale=3.0) + shift
            labels = torch.randint(c, (n,), generator=gen).to(device)
            case = label + what
            loss, dlogits = _pair(
                common.call_student(softmax_cross_entropy, "softmax_cross_entropy", logits, labels, case=case),
                "softmax_cross_entropy", "loss, dlogits", case,
            )
            check_grad("loss", loss, F.cross_entropy(logits, labels), context=case)
            (expected,) = autograd_grads(lambda z: F.cross_entropy(z, labels), logits)
            check_grad("dlogits", dlogits, expected, context=case)


@common.graded
def check_forward(forward):
    for label, gen, n, dtype, device in common.cases(706):
        sizes = _sizes(n)
        params = _random_params(gen, sizes, dtype, device)
        x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
        _forward_output(forward, "forward", (params, x), _network(params, x), f"{label}, sizes {sizes}")


@common.graded
def check_backward(forward, backward):
    """Every parameter gradient of the whole network, for an arbitrary upstream gradient of the logits."""
    for label, gen, n, dtype, device in common.cases(707):
        sizes = _sizes(n)
        case = f"{label}, sizes {sizes}"
        params = _random_params(gen, sizes, dtype, device)
        x = common.randn(gen, n, sizes[0], dtype=dtype, device=device)
        dlogits = common.randn(gen, n, sizes[-1], dtype=dtype, device=device)
        caches = _forward_output(forward, "forward", (params, x), _network(params, x), case)
        grads = common.call_student(backward, "backward", dlogits, caches, case=case)
        if not isinstance(grads, dict) or set(NAMES) - set(grads):
            missing = sorted(set(NAMES) - set(grads)) if isinstance(grads, dict) else NAMES
            raise AssertionError(
                f"`backward` should return a dict with the keys {', '.join(NAMES)}; missing: {', '.join(missing)} ({case})."
            )
        expected = autograd_grads(
            lambda *ps: (_network(dict(zip(NAMES, ps)), x) * dlogits).sum(), *(params[k] for k in NAMES)
        )
        for name, e in zip(NAMES, expected):
            check_grad(f"d{name}", grads[name], e, context=case)


@common.graded
def check_sgd_step(sgd_step):
    """In place: velocity ← momentum·velocity + grad, then param ← param − lr·velocity."""
    for label, gen, n, dtype, device in common.cases(708, sizes=(1, 7)):
        for momentum in (0.0, 0.9):
            case = f"{label}, lr=0.05, momentum={momentum}"
            params = _random_params(gen, _sizes(n), dtype, device)
            grads = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            velocity = {k: common.randn(gen, *p.shape, dtype=dtype, device=device) for k, p in params.items()}
            new_v = {k: momentum * velocity[k] + grads[k] for k in NAMES}
            new_p = {k: params[k] - 0.05 * new_v[k] for k in NAMES}
            tensors = {k: (params[k], velocity[k]) for k in NAMES}
            common.call_student(sgd_step, "sgd_step", params, grads, velocity, 0.05, momentum, case=case,
                                mutable=(0, 2))
            for k in NAMES:
                if params[k] is not tensors[k][0] or velocity[k] is not tensors[k][1]:
                    raise AssertionError(
                        f"`sgd_step` replaced params[{k!r}] or velocity[{k!r}] by a new tensor ({case}). Update them in "
                        f"place (e.g. `p -= lr * v`, `v.mul_(momentum).add_(g)`), so no new memory is taken each step."
                    )
                check_grad(f"velocity[{k!r}] after the step", velocity[k], new_v[k],
                           context=f"{case}; it should become momentum·velocity + grad")
                check_grad(f"params[{k!r}] after the step", params[k], new_p[k],
                           context=f"{case}; it should become param − lr·(the new velocity)")


def _reference_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
    """One epoch of SGD with momentum, gradients by autograd, on the same batches as the student's loop."""
    total = 0.0
    for idx in minibatches(len(X), batch_size, generator, X.device):
        loss_fn = lambda *ps: F.cross_entropy(_network(dict(zip(NAMES, ps)), X[idx]), y[idx])  # noqa: E731
        grads = autograd_grads(loss_fn, *(params[k] for k in NAMES))
        total += loss_fn(*(params[k] for k in NAMES)).item() * len(idx)
        for k, g in zip(NAMES, grads):
            velocity[k] = momentum * velocity[k] + g
            params[k] = params[k] - lr * velocity[k]
    return total / len(X)


@common.graded
def check_train_epoch(train_epoch):
    """One epoch of hand-gradient training follows autograd's training step for step."""
    for device in common.devices():
        gen = torch.Generator().manual_seed(709)
        n, batch_size, lr, momentum = 80, 16, 0.1, 0.9
        sizes = (12, 10, 8, 4)
        case = f"{n} rows, sizes {sizes}, batch_size={batch_size}, lr={lr}, momentum={momentum}, float64, {device.type}"
        X = common.randn(gen, n, sizes[0], dtype=torch.float64, device=device)
        y = torch.randint(sizes[-1], (n,), generator=gen).to(device)
        params = _random_params(gen, sizes, torch.float64, device)
        velocity = {k: torch.zeros_like(p) for k, p in params.items()}
        ref_p, ref_v = dict(params), dict(velocity)
        params = {k: p.clone() for k, p in params.items()}
        velocity = {k: v.clone() for k, v in velocity.items()}
        for epoch in (1, 2):
            expected_loss = _reference_epoch(ref_p, ref_v, X, y, batch_size, lr, momentum, torch.Generator().manual_seed(epoch))
            loss = common.call_student(
                train_epoch, "train_epoch", params, velocity, X, y, batch_size, lr, momentum,
                torch.Generator().manual_seed(epoch), case=case, mutable=(0, 1, 7),
            )
            context = f"{case}, after epoch {epoch}"
            for k in NAMES:
                check_grad(f"params[{k!r}]", params[k], ref_p[k], context=context)
            if not isinstance(loss, (int, float)) or abs(loss - expected_loss) > 1e-9:
                raise AssertionError(
                    f"train_epoch returned {loss!r} but the epoch's mean loss was {expected_loss} ({context}). "
                    "Add each batch's loss times its size to total_loss."
                )


@common.graded
def check_mnist_training(train_epoch, epochs=4, threshold=0.92, budget_s=40.0):
    """The MNIST network, trained from lesson 6's initial weights with the student's hand-gradient epochs,
    reaches ``threshold`` on held-out images within ``budget_s`` seconds."""
    run = mnist_run.prepare()
    params = mnist_run.hand_parameters(run.device)
    velocity = {k: torch.zeros_like(p) for k, p in params.items()}
    gen = torch.Generator().manual_seed(mnist_run.SEED)
    with mnist_run.one_cpu_thread():
        start = time.perf_counter()
        for epoch in range(epochs):
            common.call_student(
                train_epoch, "train_epoch", params, velocity, run.X, run.y, mnist_run.BATCH_SIZE,
                mnist_run.learning_rate(epoch), mnist_run.MOMENTUM, gen, case=f"MNIST, epoch {epoch + 1}",
                mutable=(0, 1, 7),
            )
            mnist_run.check_time(start, budget_s, epoch + 1, epochs)
    with torch.no_grad():
        acc = (_network(params, run.X_test).argmax(dim=1) == run.y_test).double().mean().item()
    mnist_run.check_accuracy(acc, threshold, epochs)
