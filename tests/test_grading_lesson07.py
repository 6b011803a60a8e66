"""The hidden checks of lesson 7 pass the reference solutions and fail typical mistakes with a useful message."""
import pytest
import torch
import torch.nn.functional as F

from gradlab.grading import lesson07
from gradlab.training import minibatches


# Reference solutions, as in the lesson's solution cells.
def linear_forward(x, W, b):
    return x @ W + b, (x, W)


def linear_backward(dout, cache):
    x, W = cache
    return dout @ W.T, x.T @ dout, dout.sum(dim=0)


def relu_forward(x):
    out = x.clamp(min=0)
    return out, out > 0


def relu_backward(dout, cache):
    return dout * cache


def softmax_cross_entropy(logits, labels):
    n = logits.shape[0]
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    return -(one_hot * log_probs).sum() / n, (log_probs.exp() - one_hot) / n


def forward(params, X):
    z1, c1 = linear_forward(X, params["W1"], params["b1"])
    a1, r1 = relu_forward(z1)
    z2, c2 = linear_forward(a1, params["W2"], params["b2"])
    a2, r2 = relu_forward(z2)
    logits, c3 = linear_forward(a2, params["W3"], params["b3"])
    return logits, (c1, r1, c2, r2, c3)


def backward(dlogits, caches):
    c1, r1, c2, r2, c3 = caches
    grads = {}
    da2, grads["W3"], grads["b3"] = linear_backward(dlogits, c3)
    da1, grads["W2"], grads["b2"] = linear_backward(relu_backward(da2, r2), c2)
    dz1 = relu_backward(da1, r1)
    x, _ = c1
    grads["W1"], grads["b1"] = x.T @ dz1, dz1.sum(dim=0)
    return grads


def sgd_step(params, grads, velocity, lr, momentum):
    for name, p in params.items():
        velocity[name].mul_(momentum).add_(grads[name])
        p.sub_(lr * velocity[name])


def train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator):
    total_loss = torch.zeros((), dtype=X.dtype, device=X.device)
    for idx in minibatches(len(X), batch_size, generator, X.device):
        logits, caches = forward(params, X[idx])
        loss, dlogits = softmax_cross_entropy(logits, y[idx])
        sgd_step(params, backward(dlogits, caches), velocity, lr, momentum)
        total_loss += loss * len(idx)
    return total_loss.item() / len(X)


def test_reference_solutions_pass():
    lesson07.check_linear_forward(linear_forward)
    lesson07.check_linear_backward(linear_forward, linear_backward)
    lesson07.check_relu_forward(relu_forward)
    lesson07.check_relu_backward(relu_forward, relu_backward)
    lesson07.check_softmax_cross_entropy(softmax_cross_entropy)
    lesson07.check_forward(forward)
    lesson07.check_backward(forward, backward)
    lesson07.check_sgd_step(sgd_step)
    lesson07.check_train_epoch(train_epoch)


def test_backward_through_the_first_layer_input_passes_too():
    def backward_with_dx(dlogits, caches):
        c1, r1, c2, r2, c3 = caches
        grads = {}
        da2, grads["W3"], grads["b3"] = linear_backward(dlogits, c3)
        da1, grads["W2"], grads["b2"] = linear_backward(relu_backward(da2, r2), c2)
        _, grads["W1"], grads["b1"] = linear_backward(relu_backward(da1, r1), c1)
        return grads
    lesson07.check_backward(forward, backward_with_dx)


@pytest.mark.parametrize("wrong, name", [
    (lambda dout, c: (dout @ c[1].T, dout.T @ c[0], dout.sum(0)), "dW"),  # transposed
    (lambda dout, c: (dout @ c[1].T, c[0].T @ dout, dout), "db"),  # no sum over the batch
    (lambda dout, c: (dout @ c[1].T, c[0].T @ dout / len(dout), dout.sum(0)), "dW"),  # a stray 1/N
    (lambda dout, c: (-(dout @ c[1].T), c[0].T @ dout, dout.sum(0)), "dx"),  # sign
])
def test_linear_backward_mistakes_fail(wrong, name):
    with pytest.raises(AssertionError, match=name):
        lesson07.check_linear_backward(linear_forward, wrong)


def test_a_wrong_forward_is_caught_before_its_backward():
    with pytest.raises(AssertionError, match="linear_forward output"):
        lesson07.check_linear_backward(lambda x, W, b: (x @ W, (x, W)), linear_backward)


def test_relu_mistakes_fail():
    with pytest.raises(AssertionError, match="relu_forward output"):
        lesson07.check_relu_forward(lambda x: (x.abs(), x))
    with pytest.raises(AssertionError, match="dx"):
        lesson07.check_relu_backward(lambda x: (x.clamp(min=0), x), lambda dout, x: dout * x.clamp(min=0))
    with pytest.raises(AssertionError, match="dx"):
        lesson07.check_relu_backward(relu_forward, lambda dout, mask: dout)


@pytest.mark.parametrize("wrong, name", [
    (lambda z, y: (softmax_cross_entropy(z, y)[0], softmax_cross_entropy(z, y)[1] * len(z)), "dlogits"),
    (lambda z, y: (softmax_cross_entropy(z, y)[0] * len(z), softmax_cross_entropy(z, y)[1]), "loss"),
    (lambda z, y: (F.cross_entropy(z, y), (z.exp() / z.exp().sum(1, keepdim=True) - F.one_hot(y, z.shape[1])) / len(z)),
     "dlogits"),
    (lambda z, y: softmax_cross_entropy(z, y)[1], "should return a pair"),
])
def test_softmax_cross_entropy_mistakes_fail(wrong, name):
    with pytest.raises(AssertionError, match=name):
        lesson07.check_softmax_cross_entropy(wrong)


def test_forward_mistakes_fail():
    def relu_on_logits(params, X):
        logits, caches = forward(params, X)
        return logits.clamp(min=0), caches
    with pytest.raises(AssertionError, match="forward output"):
        lesson07.check_forward(relu_on_logits)


@pytest.mark.parametrize("mistake, name", [("no mask in layer 2", "dW2"), ("no mask in layer 1", "dW1"), ("missing key", "b1")])
def test_backward_mistakes_fail(mistake, name):
    def wrong(dlogits, caches):
        c1, r1, c2, r2, c3 = caches
        grads = backward(dlogits, caches)
        da2, _, _ = linear_backward(dlogits, c3)
        if mistake == "no mask in layer 2":
            grads["W2"] = c2[0].T @ da2
        elif mistake == "no mask in layer 1":
            da1, _, _ = linear_backward(relu_backward(da2, r2), c2)
            grads["W1"] = c1[0].T @ da1
        else:
            del grads["b1"]
        return grads
    with pytest.raises(AssertionError, match=name):
        lesson07.check_backward(forward, wrong)


def test_a_hard_coded_backward_fails():
    params = {k: torch.zeros(3, 3) if k.startswith("W") else torch.zeros(3) for k in lesson07.NAMES}
    with pytest.raises(AssertionError):
        lesson07.check_backward(forward, lambda dlogits, caches: params)


def test_sgd_step_that_is_not_in_place_fails():
    def rebinds(params, grads, velocity, lr, momentum):
        for k in params:
            velocity[k] = momentum * velocity[k] + grads[k]
            params[k] = params[k] - lr * velocity[k]
    with pytest.raises(AssertionError, match="in place"):
        lesson07.check_sgd_step(rebinds)


@pytest.mark.parametrize("wrong, name", [
    (lambda p, g, v, lr, m: [p[k].sub_(lr * g[k]) for k in p], "velocity"),  # momentum ignored
    (lambda p, g, v, lr, m: [(v[k].mul_(m).add_(g[k]), p[k].add_(lr * v[k])) for k in p], "params"),  # sign
])
def test_sgd_step_mistakes_fail(wrong, name):
    with pytest.raises(AssertionError, match=name):
        lesson07.check_sgd_step(wrong)


def test_train_epoch_mistakes_fail():
    def no_momentum(params, velocity, X, y, batch_size, lr, momentum, generator):
        return train_epoch(params, velocity, X, y, batch_size, lr, 0.0, generator)

    def loss_not_summed(params, velocity, X, y, batch_size, lr, momentum, generator):
        train_epoch(params, velocity, X, y, batch_size, lr, momentum, generator)
        return 0.0

    with pytest.raises(AssertionError, match="params"):
        lesson07.check_train_epoch(no_momentum)
    with pytest.raises(AssertionError, match="total_loss"):
        lesson07.check_train_epoch(loss_not_summed)


@pytest.mark.slow
def test_mnist_training_reaches_the_threshold_with_the_reference_epoch():
    lesson07.check_mnist_training(train_epoch)


@pytest.mark.slow
def test_mnist_training_fails_when_nothing_is_learnt():
    with pytest.raises(AssertionError, match="held-out test images"):
        lesson07.check_mnist_training(lambda *args: 0.0, epochs=1)


def test_hand_parameters_are_pytorchs_initialisation_transposed():
    from gradlab.grading import mnist_run
    net = mnist_run.torch_network(torch.device("cpu"))
    params = mnist_run.hand_parameters(torch.device("cpu"))
    assert torch.equal(params["W1"], net[0].weight.detach().T) and torch.equal(params["b3"], net[4].bias.detach())
    assert params["W2"].shape == (128, 64) and params["W3"].shape == (64, 10)
