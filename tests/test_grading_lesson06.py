"""The hidden checks of lesson 6 pass the lesson's solutions and every valid variant a docstring allows, fail each
class of mistake with a message that names it, and agree both ways the grader runs them (locally, and recorded in
the kernel then replayed: tests/grading_modes.py)."""
import inspect

import pytest
import torch
import torch.nn.functional as F

from course import solution_namespace
from grading_modes import both
from gradlab.grading import lesson06, mnist_run
from gradlab.training import minibatches

NOTEBOOK = "06-mnist-pytorch/mnist-pytorch.ipynb"
SOLUTIONS = solution_namespace(NOTEBOOK)
accuracy, class_means, squared_distances, softmax_cross_entropy_grad, train_epoch = (
    SOLUTIONS[n] for n in ("accuracy", "class_means", "squared_distances", "softmax_cross_entropy_grad", "train_epoch"))


def passes(check, *args):
    err, verdict = both(check, *args)
    assert err is None, err
    return verdict


def fails(check, *args, kind=None, needles=()):
    err, verdict = both(check, *args)
    assert err is not None, "the check passed"
    message = str(err)
    if kind is not None:
        assert getattr(err, "kind", None) == kind == verdict.kind, (getattr(err, "kind", None), verdict.kind, message)
    for needle in needles:
        assert needle in message, message
    return message


def namespace(source):
    ns = {"torch": torch, "F": F, "minibatches": minibatches}
    exec(source, ns)
    return ns


def test_the_lesson_solutions_pass_both_ways_without_notes():
    for check, fn in ((lesson06.check_accuracy, accuracy), (lesson06.check_class_means, class_means),
                      (lesson06.check_squared_distances, squared_distances),
                      (lesson06.check_softmax_cross_entropy_grad, softmax_cross_entropy_grad),
                      (lesson06.check_train_epoch, train_epoch)):
        assert not passes(check, fn).notes


def test_an_unwritten_exercise_says_so():
    def stub(*args):
        raise NotImplementedError
    for check in (lesson06.check_accuracy, lesson06.check_class_means, lesson06.check_squared_distances,
                  lesson06.check_softmax_cross_entropy_grad, lesson06.check_train_epoch):
        fails(check, stub, kind="not written", needles=["not written yet"])


# ---------------------------------------------------------------- accuracy
@pytest.mark.parametrize("right", [
    lambda z, y: (z.argmax(dim=1) == y).double().mean(),  # a 0-dim tensor
    lambda z, y: (torch.softmax(z, dim=1).argmax(1) == y).sum().item() / len(y),
    lambda z, y: z.max(dim=1).indices.eq(y).float().mean().item(),
    lambda z, y: float((z.cpu().numpy().argmax(axis=1) == y.cpu().numpy()).mean()),
])
def test_accuracy_variants_pass(right):
    passes(lesson06.check_accuracy, right)


@pytest.mark.parametrize("wrong, kind, hint", [
    (lambda z, y: 100 * accuracy(z, y), "percentage", "percentage"),
    (lambda z, y: 1 - accuracy(z, y), "error rate", "error rate"),
    (lambda z, y: (z.argmax(dim=1) == y).sum().item(), "count", "number of correct rows"),
    (lambda z, y: 0.5, "values", "should be"),
    (lambda z, y: (z.argmin(dim=1) == y).float().mean(), "values", "should be"),
    (lambda z, y: (z.argmax(dim=0)[: len(y)] == y).float().mean(), None, ""),
])
def test_wrong_accuracies_fail(wrong, kind, hint):
    fails(lesson06.check_accuracy, wrong, kind=kind, needles=[hint])


# ---------------------------------------------------------------- the nearest-mean baseline
def test_class_means_variants_pass():
    def by_one_hot(X, y, num_classes=10):
        one_hot = F.one_hot(y, num_classes).to(X.dtype)
        return (one_hot.T @ X) / one_hot.sum(dim=0)[:, None]

    def by_index_add(X, y, num_classes=10):
        sums = torch.zeros(num_classes, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, y, X)
        return sums / torch.bincount(y, minlength=num_classes)[:, None].to(X.dtype)
    passes(lesson06.check_class_means, by_one_hot)
    passes(lesson06.check_class_means, by_index_add)


def test_class_means_mistakes_fail():
    fails(lesson06.check_class_means, lambda X, y, num_classes=10: F.one_hot(y, num_classes).to(X.dtype).T @ X / len(X),
          needles=["class means is wrong"])
    fails(lesson06.check_class_means, lambda X, y, num_classes=10: torch.stack([X[y == k].mean(0) for k in range(10)]),
          needles=["class means", "num_classes=4"])  # num_classes ignored
    fails(lesson06.check_class_means,
          lambda X, y, num_classes=10: torch.stack([X[y == k].mean(0) for k in range(num_classes)]).float(),
          kind="placement", needles=["float32"])


# ---------------------------------------------------------------- squared distances
def test_squared_distance_variants_pass():
    passes(lesson06.check_squared_distances, lambda X, M: ((X[:, None, :] - M[None, :, :]) ** 2).sum(dim=2))
    passes(lesson06.check_squared_distances, lambda X, M: torch.cdist(X, M) ** 2)
    passes(lesson06.check_squared_distances,
           lambda X, M: torch.einsum("nd,nd->n", X, X)[:, None] - 2 * torch.einsum("nd,kd->nk", X, M) + (M * M).sum(1))


def test_squared_distance_mistakes_fail():
    fails(lesson06.check_squared_distances, lambda X, M: torch.cdist(X, M), needles=["squared distances is wrong"])
    fails(lesson06.check_squared_distances, lambda X, M: (X**2).sum(1, keepdim=True) + 2 * X @ M.T + (M**2).sum(1),
          needles=["squared distances is wrong"])
    fails(lesson06.check_squared_distances, lambda X, M: squared_distances(X, M).float(), kind="placement",
          needles=["float32"])


# ---------------------------------------------------------------- the gradient of softmax-cross-entropy
RIGHT_GRADIENTS = {
    "torch.softmax minus one-hot": """
def grad(logits, labels):
    return (torch.softmax(logits, dim=1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / len(labels)
""",
    "log_softmax().exp()": """
def grad(logits, labels):
    p = F.log_softmax(logits, dim=1).exp()
    return (p - F.one_hot(labels, logits.shape[1]).to(p.dtype)) / logits.shape[0]
""",
    "index -= 1 on its own softmax": """
def grad(logits, labels):
    p = torch.softmax(logits, dim=1)
    p[torch.arange(len(labels), device=labels.device), labels] -= 1
    return p / len(labels)
""",
    "each row shifted by its own maximum": """
def grad(logits, labels):
    e = (logits - logits.max(dim=1, keepdim=True).values).exp()
    onehot = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
    return (e / e.sum(dim=1, keepdim=True) - onehot) / logits.shape[0]
""",
    "torch.where for the one-hot": """
def grad(logits, labels):
    classes = torch.arange(logits.shape[1], device=logits.device)
    onehot = torch.where(classes[None, :] == labels[:, None], 1.0, 0.0).to(logits.dtype)
    return torch.softmax(logits, 1).sub(onehot).div(logits.shape[0])
""",
}


@pytest.mark.parametrize("how", list(RIGHT_GRADIENTS))
def test_softmax_gradient_variants_pass(how):
    passes(lesson06.check_softmax_cross_entropy_grad, namespace(RIGHT_GRADIENTS[how])["grad"])


@pytest.mark.parametrize("wrong, kind", [
    (lambda z, y: softmax_cross_entropy_grad(z, y) * z.shape[0], "factor"),  # the 1/N is missing
    (lambda z, y: -softmax_cross_entropy_grad(z, y), "sign"),
    (lambda z, y: torch.softmax(z, dim=1) / z.shape[0], "onehot_missing"),  # the one-hot is missing
    (lambda z, y: softmax_cross_entropy_grad(z, y).float(), "placement"),  # float32 for float64 logits
])
def test_wrong_softmax_gradients_fail(wrong, kind):
    fails(lesson06.check_softmax_cross_entropy_grad, wrong, kind=kind, needles=["dL/dlogits"])


def _with(p_y):
    """A gradient made from the softmax p and the one-hot rows y (and N, the logits, the labels)."""
    def grad(logits, labels):
        p = torch.softmax(logits, dim=1)
        y = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return p_y(p, y, len(labels), logits, labels)
    return grad


def _assign_minus_one(p, y, n, z, labels):
    d = p.clone()
    d[torch.arange(n), labels] = -1.0  # `=` where `-=` belongs
    return d / n


@pytest.mark.parametrize("wrong, kind, needle", [
    (_with(lambda p, y, n, z, l: (torch.softmax(z, dim=0) - y) / n), "softmax_axis",
     "the softmax is taken over the wrong axis (down the batch, dim=0)"),
    (_with(lambda p, y, n, z, l: -y * (1 - p) / n), "softmax_diag", "it keeps only the diagonal p·(1 − p)"),
    (_with(lambda p, y, n, z, l: (p - y) * p * (1 - p) / n), "softmax_diag",
     "it multiplies by the diagonal p·(1 − p) of the softmax Jacobian, which (p − one_hot) already contains"),
    (_with(lambda p, y, n, z, l: (p + y) / n), "onehot_added", "it adds the one-hot labels instead of subtracting them"),
    (_with(lambda p, y, n, z, l: p / n), "onehot_missing", "the one-hot term is missing"),
    (_with(_assign_minus_one), "last_term", "at each row's label it assigns −1 instead of subtracting 1"),
])
def test_a_softmax_gradients_formula_mistake_is_named_from_every_case_with_its_fix_and_picture(wrong, kind, needle):
    """Named only when it fits every case tried (18 of them), from n = 64, with the fix and the gradient drawn."""
    err, verdict = both(lesson06.check_softmax_cross_entropy_grad, wrong)
    message = str(err)
    head = message.splitlines()[0]
    assert verdict.kind == kind and needle in head and "Fix:" in head and "(n=64" in head, message
    assert "mask" not in message and verdict.figure and "first wrong" in verdict.figure


@pytest.mark.parametrize("wrong", [
    _with(lambda p, y, n, z, l: (p - (0.9 * y + 0.1 / y.shape[1])) / n),  # label smoothing
    _with(lambda p, y, n, z, l: (torch.log_softmax(z, 1) - y) / n),
    _with(lambda p, y, n, z, l: (torch.softmax(z / 2, 1) - y) / n),
    _with(lambda p, y, n, z, l: p + y),  # two slips at once
    _with(lambda p, y, n, z, l: (p - y) * (p > 0.3) / n),  # zeros in odd places: no ReLU-mask hint for a softmax
])
def test_a_softmax_gradient_mistake_that_is_no_usual_slip_is_not_given_one_nor_a_mask_hint(wrong):
    from gradlab.variants import KINDS

    err, verdict = both(lesson06.check_softmax_cross_entropy_grad, wrong)
    message = str(err)
    assert verdict.kind not in KINDS and "Fix:" not in message and "mask" not in message, message
    assert not verdict.figure and "(n=1," not in message.splitlines()[0]


def test_a_gradient_divided_by_every_logit_is_told_it_is_divided_by_the_classes_too():
    err, verdict = both(lesson06.check_softmax_cross_entropy_grad,
                        _with(lambda p, y, n, z, l: (p - y) / z.numel()))
    message = str(err)
    assert verdict.kind == "factor" and "3 is the number of classes C here: it is divided by N·C = 192" in message
    assert "divide by N = logits.shape[0]" in message and "(n=64" in message.splitlines()[0]


def test_a_softmax_without_the_shift_or_with_one_shift_for_the_batch_fails():
    unshifted = namespace("""
def grad(logits, labels):
    e = logits.exp()
    return (e / e.sum(1, keepdim=True) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / len(logits)
""")["grad"]
    global_shift = namespace("""
def grad(logits, labels):
    e = (logits - logits.max()).exp()  # one maximum for the whole batch
    return (e / e.sum(1, keepdim=True) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / len(logits)
""")["grad"]
    fails(lesson06.check_softmax_cross_entropy_grad, unshifted, kind="overflow", needles=["each row's own largest logit"])
    message = fails(lesson06.check_softmax_cross_entropy_grad, global_shift, kind="overflow",
                    needles=["one maximum for the whole batch"])
    assert "1000 apart" in message  # only rows far apart catch it: a batch shifted as a whole does not


def test_a_hard_coded_gradient_fails():
    fixed = softmax_cross_entropy_grad(torch.zeros(7, 10), torch.zeros(7, dtype=torch.long))
    fails(lesson06.check_softmax_cross_entropy_grad, lambda z, y: fixed.to(z.dtype))


AUTOGRAD_GRADIENTS = {
    ".backward()": """
def grad(logits, labels):
    z = logits.detach().clone().requires_grad_()
    F.cross_entropy(z, labels).backward()
    return z.grad
""",
    "torch.autograd.grad": """
def grad(logits, labels):
    z = logits.detach().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(z, labels), z)[0]
""",
    "a saved reference": """
from torch.autograd import grad as saved
def grad(logits, labels):
    z = logits.clone()
    z.requires_grad = True
    return saved(F.cross_entropy(z, labels), z)[0]
""",
    "requires_grad=True": """
def grad(logits, labels):
    z = torch.tensor(logits.tolist(), dtype=logits.dtype, device=logits.device, requires_grad=True)
    F.cross_entropy(z, labels).backward()
    return z.grad
""",
    "nn.Parameter": """
def grad(logits, labels):
    z = torch.nn.Parameter(logits.clone())
    F.cross_entropy(z, labels).backward()
    return z.grad.detach()
""",
    "torch.func.grad": """
def grad(logits, labels):
    return torch.func.grad(lambda z: F.cross_entropy(z, labels))(logits)
""",
}


@pytest.mark.parametrize("how", list(AUTOGRAD_GRADIENTS))
def test_autograd_in_the_gradient_fails(how):
    fails(lesson06.check_softmax_cross_entropy_grad, namespace(AUTOGRAD_GRADIENTS[how])["grad"], kind="autograd",
          needles=["`softmax_cross_entropy_grad` used autograd", "derived by hand"])


def test_changing_the_logits_in_place_fails_naming_them():
    def shifts_in_place(logits, labels):
        logits -= logits.max(dim=1, keepdim=True).values
        return softmax_cross_entropy_grad(logits, labels)
    fails(lesson06.check_softmax_cross_entropy_grad, shifts_in_place, kind="changed input",
          needles=["changed its input `logits` in place"])


# ---------------------------------------------------------------- one epoch of training
def _loop(shuffle=True, zero_grad="before", align=True, loss_mean="weighted", fresh_order=True, step="per batch",
          drop_last=False):
    """train_epoch with one classic mistake switched on."""
    fixed = torch.Generator()

    def epoch(model, optimizer, X, y, batch_size, generator):
        gen = generator if fresh_order else fixed.manual_seed(0)
        order = torch.randperm(len(X), generator=gen).to(X.device) if shuffle else torch.arange(len(X), device=X.device)
        stop = len(X) - len(X) % batch_size if drop_last else len(X)
        losses, total = [], None
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            targets = y[idx] if align else y[start:start + batch_size]
            loss = F.cross_entropy(model(X[idx]), targets)
            if step == "per batch":
                if zero_grad == "before":
                    optimizer.zero_grad()
                loss.backward()
                if zero_grad == "between":
                    optimizer.zero_grad()
                optimizer.step()
            else:
                total = loss if total is None else total + loss
            losses.append((loss.item(), len(idx)))
        if step == "per epoch":
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
        if loss_mean == "last":
            return losses[-1][0]
        if loss_mean == "nominal":
            return sum(l * batch_size for l, _ in losses) / len(X)
        if loss_mean == "mean of means":
            return sum(l for l, _ in losses) / len(losses)
        return sum(l * n for l, n in losses) / len(X)

    return epoch


TRAIN_VARIANTS = {
    "zero_grad after the step": """
def train_epoch(model, optimizer, X, y, batch_size, generator):
    total = 0.0
    for idx in minibatches(len(X), batch_size, generator, X.device):
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)
        total += loss.item() * len(idx)
    return total / len(X)
""",
    "own permutation, a tensor returned": """
def train_epoch(model, optimizer, X, y, batch_size, generator):
    order = torch.randperm(len(X), generator=generator)
    total = torch.zeros((), dtype=torch.float64)
    for batch in order.split(batch_size):
        batch = batch.to(X.device)
        logits = model(X[batch])
        loss = F.nll_loss(F.log_softmax(logits, dim=1), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.detach().cpu() * len(batch)
    return total / len(X)
""",
    "a DataLoader with the generator": """
def train_epoch(model, optimizer, X, y, batch_size, generator):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size, shuffle=True,
                                         generator=generator)
    total = 0.0
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb, reduction="sum")
        (loss / len(xb)).backward()
        optimizer.step()
        total += loss.item()
    return total / len(X)
""",
}


@pytest.mark.parametrize("how", list(TRAIN_VARIANTS))
def test_train_epoch_variants_pass(how):
    passes(lesson06.check_train_epoch, namespace(TRAIN_VARIANTS[how])["train_epoch"])


def test_the_loop_mistake_free_variant_passes():
    passes(lesson06.check_train_epoch, _loop())


@pytest.mark.parametrize("mistake, kind, message", [
    (dict(zero_grad="never"), "zero_grad", "optimizer.zero_grad() before every loss.backward()"),
    (dict(zero_grad="between"), "no step", "did not change"),
    (dict(step="per epoch"), "one step per epoch", "one optimizer step for the whole epoch"),
    (dict(shuffle=False), "not shuffled", "new random order"),
    (dict(fresh_order=False), "not shuffled", "new random order"),
    (dict(align=False), "labels misaligned", "Slice X and y with the same indices"),
    (dict(loss_mean="last"), "epoch loss", "the last batch's loss"),
    (dict(loss_mean="nominal"), "epoch loss", "nominal batch size"),
    (dict(loss_mean="mean of means"), "epoch loss", "the mean of the batch means"),
    (dict(drop_last=True), "batches", "the last batch is smaller"),
])
def test_loop_mistakes_fail_with_their_explanation(mistake, kind, message):
    fails(lesson06.check_train_epoch, _loop(**mistake), kind=kind, needles=[message])


def test_a_loop_that_ignores_the_batch_size_fails():
    def full_batch(model, optimizer, X, y, batch_size, generator):
        return _loop()(model, optimizer, X, y, len(X), generator)
    fails(lesson06.check_train_epoch, full_batch, kind="batches", needles=["batch sizes were [100]"])


def test_no_hand_formula_in_readable_form():
    """Students can read these modules: no gradient or baseline formula of the exercises in them."""
    for module in (lesson06, mnist_run):
        source = inspect.getsource(module)
        for formula in ("one_hot", ".softmax(", "M.T", "[:, None, :]", "X[y ==", "** 2).sum("):
            assert formula not in source, (module.__name__, formula)


# ---------------------------------------------------------------- the accuracy threshold
@pytest.mark.slow
def test_mnist_training_reaches_the_threshold_with_the_reference_loop():
    passes(lesson06.check_mnist_training, train_epoch)


@pytest.mark.slow
def test_mnist_training_fails_when_nothing_is_learnt():
    def idle(model, optimizer, X, y, batch_size, generator):
        return 0.0
    fails(lesson06.check_mnist_training, idle, 1, kind="accuracy", needles=["held-out test images"])


def test_mnist_training_fails_over_the_time_budget_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    with pytest.raises(AssertionError, match="too slow"):
        lesson06.check_mnist_training(train_epoch, epochs=1, budget_s=0.0)
    assert torch.get_num_threads() == threads
