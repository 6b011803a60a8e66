"""The hidden checks of lesson 6 pass the reference solutions and fail typical mistakes with a useful message."""
import pytest
import torch
import torch.nn.functional as F

from gradlab.grading import lesson06
from gradlab.training import minibatches


# Reference solutions, as in the lesson's solution cells.
def accuracy(logits, labels):
    return (logits.argmax(dim=1) == labels).float().mean().item()


def class_means(X, y, num_classes=10):
    one_hot = F.one_hot(y, num_classes).to(X.dtype)
    return (one_hot.T @ X) / one_hot.sum(dim=0)[:, None]


def squared_distances(X, M):
    return (X**2).sum(dim=1, keepdim=True) - 2 * X @ M.T + (M**2).sum(dim=1)


def softmax_cross_entropy_grad(logits, labels):
    probs = torch.softmax(logits, dim=1)
    return (probs - F.one_hot(labels, logits.shape[1]).to(logits.dtype)) / logits.shape[0]


def train_epoch(model, optimizer, X, y, batch_size, generator):
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for idx in minibatches(len(X), batch_size, generator, X.device):
        loss = F.cross_entropy(model(X[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
    return total.item() / len(X)


def test_reference_solutions_pass():
    lesson06.check_accuracy(accuracy)
    lesson06.check_class_means(class_means)
    lesson06.check_squared_distances(squared_distances)
    lesson06.check_softmax_cross_entropy_grad(softmax_cross_entropy_grad)
    lesson06.check_train_epoch(train_epoch)


def test_an_unwritten_exercise_says_so():
    def stub(logits, labels):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="not written yet"):
        lesson06.check_accuracy(stub)


@pytest.mark.parametrize("wrong, hint", [
    (lambda z, y: 100 * accuracy(z, y), "percentage"),
    (lambda z, y: 1 - accuracy(z, y), "error rate"),
    (lambda z, y: (z.argmax(dim=1) == y).sum().item(), "number of correct rows"),
    (lambda z, y: 0.5, "should be"),
    (lambda z, y: (z.argmin(dim=1) == y).float().mean(), "should be"),
])
def test_wrong_accuracies_fail(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        lesson06.check_accuracy(wrong)


def test_class_means_divided_by_the_wrong_count_fail():
    with pytest.raises(AssertionError, match="class means"):
        lesson06.check_class_means(lambda X, y: F.one_hot(y, 10).to(X.dtype).T @ X / len(X))


def test_distances_without_the_square_or_with_a_sign_slip_fail():
    with pytest.raises(AssertionError, match="squared distances"):
        lesson06.check_squared_distances(lambda X, M: torch.cdist(X, M))
    with pytest.raises(AssertionError, match="squared distances"):
        lesson06.check_squared_distances(lambda X, M: (X**2).sum(1, keepdim=True) + 2 * X @ M.T + (M**2).sum(1))


@pytest.mark.parametrize("wrong", [
    lambda z, y: softmax_cross_entropy_grad(z, y) * z.shape[0],  # the 1/N is missing
    lambda z, y: -softmax_cross_entropy_grad(z, y),  # sign
    lambda z, y: torch.softmax(z, dim=1) / z.shape[0],  # the one-hot is missing
    lambda z, y: (z.exp() / z.exp().sum(1, keepdim=True) - F.one_hot(y, z.shape[1]).to(z.dtype)) / len(z),  # overflows
])
def test_wrong_cross_entropy_gradients_fail(wrong):
    with pytest.raises(AssertionError, match="dL/dlogits"):
        lesson06.check_softmax_cross_entropy_grad(wrong)


def test_a_hard_coded_gradient_fails():
    fixed = softmax_cross_entropy_grad(torch.zeros(7, 10), torch.zeros(7, dtype=torch.long))
    with pytest.raises(AssertionError):
        lesson06.check_softmax_cross_entropy_grad(lambda z, y: fixed.to(z.dtype))


def _loop(shuffle=True, zero_grad=True, align=True, loss_mean="weighted", fresh_order=True, step=True):
    """train_epoch with one classic mistake switched on."""
    fixed = torch.Generator().manual_seed(0)

    def epoch(model, optimizer, X, y, batch_size, generator):
        gen = generator if fresh_order else fixed.manual_seed(0)
        order = torch.randperm(len(X), generator=gen).to(X.device) if shuffle else torch.arange(len(X), device=X.device)
        losses = []
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            targets = y[idx] if align else y[start:start + batch_size]
            loss = F.cross_entropy(model(X[idx]), targets)
            if zero_grad:
                optimizer.zero_grad()
            loss.backward()
            if step:
                optimizer.step()
            losses.append((loss.item(), len(idx)))
        if loss_mean == "last":
            return losses[-1][0]
        return sum(l * n for l, n in losses) / len(X)

    return epoch


def test_the_loop_mistake_free_variant_passes():
    lesson06.check_train_epoch(_loop())


@pytest.mark.parametrize("mistake, message", [
    (dict(zero_grad=False), "zero_grad"),
    (dict(shuffle=False), "new random order"),
    (dict(fresh_order=False), "new random order"),
    (dict(align=False), "Slice X and y with the same indices"),
    (dict(loss_mean="last"), "weighted by\\s+batch size"),
])
def test_loop_mistakes_fail_with_their_explanation(mistake, message):
    with pytest.raises(AssertionError, match=message):
        lesson06.check_train_epoch(_loop(**mistake))


def test_a_loop_that_skips_the_step_fails():
    with pytest.raises(AssertionError, match="weight"):
        lesson06.check_train_epoch(_loop(step=False))


@pytest.mark.slow
def test_mnist_training_reaches_the_threshold_with_the_reference_loop():
    lesson06.check_mnist_training(train_epoch)


@pytest.mark.slow
def test_mnist_training_fails_when_nothing_is_learnt():
    def idle(model, optimizer, X, y, batch_size, generator):
        return 0.0
    with pytest.raises(AssertionError, match="held-out test images"):
        lesson06.check_mnist_training(idle, epochs=1)


def test_mnist_training_fails_over_the_time_budget_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    with pytest.raises(AssertionError, match="too slow"):
        lesson06.check_mnist_training(train_epoch, epochs=1, budget_s=0.0)
    assert torch.get_num_threads() == threads
