"""MNIST epochs: lesson 6's autograd training against lesson 7's hand backprop, and a DataLoader epoch.

Both trainings run the lessons' own solution code (benchmarks/lesson_code.py): lesson 6's
``train_epoch(model, optimizer, ...)`` and lesson 7's ``train_epoch(params, velocity, ...)`` with its
forward, backward and sgd_step. Network, initial weights, data, seed, batch size, learning rate,
momentum and decay are the same for both: the grader's settings (gradlab/grading/mnist_run.py), which
are the lessons' own, and the lessons' training split. The two trainings alternate epoch by epoch,
so a busy moment of the machine slows both rather than one; so do the DataLoader and slicing epochs.
"""
import statistics
import time

import torch
import torch.nn.functional as F

import gradlab
from gradlab.grading import mnist_run
from gradlab.training import synchronize, train_val_split

from . import lesson_code


def training_split(device, train_images=None):
    """(X, y, X_test, y_test, size of MNIST's training set as loaded): the lessons' training images (90 % of
    that set, seed 0), optionally only the first ``train_images`` of them, and the test set."""
    data = gradlab.load_mnist(device=device)
    (X, y), _ = train_val_split(data.train_images, data.train_labels, val_fraction=0.1, seed=mnist_run.SEED)
    if train_images is not None:
        X, y = X[:train_images], y[:train_images]
    return X, y, data.test_images, data.test_labels, len(data.train_images)


def timed(device, fn, *args):
    synchronize(device)
    start = time.perf_counter()
    fn(*args)
    synchronize(device)
    return time.perf_counter() - start


def autograd_vs_manual(lesson6, lesson7, data, device, epochs):
    X, y, X_test, y_test, _ = data
    model = mnist_run.torch_network(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=mnist_run.LR, momentum=mnist_run.MOMENTUM)
    params = mnist_run.hand_parameters(device)
    velocity = {name: torch.zeros_like(p) for name, p in params.items()}
    auto_gen = torch.Generator().manual_seed(mnist_run.SEED)
    hand_gen = torch.Generator().manual_seed(mnist_run.SEED)
    seconds = {"autograd": [], "manual": []}
    for epoch in range(epochs):
        lr = mnist_run.learning_rate(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        calls = [
            ("autograd", (lesson6["train_epoch"], model, optimizer, X, y, mnist_run.BATCH_SIZE, auto_gen)),
            ("manual", (lesson7["train_epoch"], params, velocity, X, y, mnist_run.BATCH_SIZE, lr, mnist_run.MOMENTUM,
                        hand_gen)),
        ]
        for name, call in calls if epoch % 2 == 0 else reversed(calls):
            seconds[name].append(timed(device, *call))
    accuracy = lesson6["accuracy"]
    with torch.no_grad():
        auto_acc = accuracy(model(X_test), y_test)
        hand_acc = accuracy(lesson7["forward"](params, X_test)[0], y_test)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    drift = max(
        max((params[f"W{i}"] - layer.weight.detach().T).abs().max().item(),
            (params[f"b{i}"] - layer.bias.detach()).abs().max().item())
        for i, layer in enumerate(linears, start=1)
    )
    return {
        "autograd_epoch_s": statistics.median(seconds["autograd"]),
        "manual_epoch_s": statistics.median(seconds["manual"]),
        "autograd_epochs_s": seconds["autograd"],
        "manual_epochs_s": seconds["manual"],
        "autograd_test_acc": auto_acc,
        "manual_test_acc": hand_acc,
        "weights_max_abs_diff": drift,
    }


def dataloader_epoch(model, optimizer, loader):
    """Lesson 6's train_epoch with the batches from a DataLoader instead of index slices."""
    total_loss, n = torch.zeros(()), 0
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(yb)
        n += len(yb)
    return total_loss.item() / n


def dataloader_vs_slicing(lesson6, data, device, repeats):
    """Lesson 6's per-sample Dataset (OneImageAtATime) in a DataLoader, against its slicing train_epoch."""
    X, y, _, _, _ = data
    loader = torch.utils.data.DataLoader(
        lesson6["OneImageAtATime"](X, y), batch_size=mnist_run.BATCH_SIZE, shuffle=True,
        generator=torch.Generator().manual_seed(mnist_run.SEED),
    )
    runs = {}
    for name in ("loader", "slices"):
        model = mnist_run.torch_network(device)
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=mnist_run.LR, momentum=mnist_run.MOMENTUM))
    generator = torch.Generator().manual_seed(mnist_run.SEED)
    calls = [
        ("loader", (dataloader_epoch, *runs["loader"], loader)),
        ("slices", (lesson6["train_epoch"], *runs["slices"], X, y, mnist_run.BATCH_SIZE, generator)),
    ]
    seconds = {"loader": [], "slices": []}
    for repeat in range(repeats):  # alternating, as for the two trainings above
        for name, call in calls if repeat % 2 == 0 else reversed(calls):
            seconds[name].append(timed(device, *call))
    return {"dataloader_epoch_s": statistics.median(seconds["loader"]),
            "slicing_epoch_s": statistics.median(seconds["slices"])}


def run(epochs=10, train_images=None, loader_repeats=3):
    device = gradlab.get_device()
    lesson6 = lesson_code.load("06", ["OneImageAtATime"])
    lesson7 = lesson_code.load("07")
    data = training_split(device, train_images)
    result = {"device": str(device), "train_images": len(data[0]), "test_images": len(data[2]),
              "mnist_train_set": data[4], "epochs": epochs,
              "batch_size": mnist_run.BATCH_SIZE, "loader_repeats": loader_repeats}
    result.update(autograd_vs_manual(lesson6, lesson7, data, device, epochs))
    result["manual_over_autograd"] = result["manual_epoch_s"] / result["autograd_epoch_s"]
    print(f"  autograd {result['autograd_epoch_s']:.2f} s/epoch, hand backprop {result['manual_epoch_s']:.2f} s/epoch",
          flush=True)
    result.update(dataloader_vs_slicing(lesson6, data, device, loader_repeats))
    result["dataloader_over_slicing"] = result["dataloader_epoch_s"] / result["slicing_epoch_s"]
    print(f"  DataLoader {result['dataloader_epoch_s']:.2f} s/epoch, slicing {result['slicing_epoch_s']:.2f} s/epoch",
          flush=True)
    return result
