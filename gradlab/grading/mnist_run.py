"""The MNIST training run behind the accuracy-threshold checks of lessons 6 and 7.

The grader owns the data, the network's initial weights and the hyper-parameters, so that only the
student's epoch function decides the result. The settings are those the lessons use.
"""
import contextlib
import functools
from collections import namedtuple

import torch

from gradlab.device import get_device
from gradlab.mnist import load_mnist
from gradlab.training import train_val_split

SEED = 0
BATCH_SIZE = 64
LR = 0.1
MOMENTUM = 0.9
LR_DECAY = 0.85  # the learning rate is multiplied by this after every epoch
TRAIN_IMAGES = 10_000  # the same amount of data with the offline subset and with the full set
SIZES = (784, 128, 64, 10)

Run = namedtuple("Run", "device X y X_test y_test")


def learning_rate(epoch):
    return LR * LR_DECAY**epoch


@functools.lru_cache(maxsize=2)
def _load(device):
    data = load_mnist(device=device)
    (X, y), _ = train_val_split(data.train_images[:TRAIN_IMAGES], data.train_labels[:TRAIN_IMAGES], seed=SEED)
    return Run(device, X, y, data.test_images, data.test_labels)


def prepare():
    """Training images (the lesson's training split) and the official test set, on the course's device."""
    return _load(get_device())


def torch_network(device):
    """784 → 128 → ReLU → 64 → ReLU → 10 with PyTorch's default initialisation from seed SEED.

    The global random state is left as it was, so the student's notebook is not disturbed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        layers = []
        for d_in, d_out in zip(SIZES[:-1], SIZES[1:]):
            layers += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
    return model.to(device)


def hand_parameters(device):
    """The same initial weights as ``torch_network`` as a dict W1, b1, … with W of shape (D_in, D_out)."""
    linears = [m for m in torch_network(device) if isinstance(m, torch.nn.Linear)]
    params = {}
    for i, layer in enumerate(linears, start=1):
        params[f"W{i}"] = layer.weight.detach().T.contiguous()
        params[f"b{i}"] = layer.bias.detach().clone()
    return params


@contextlib.contextmanager
def one_cpu_thread():
    """Run on one CPU thread, then restore the setting.

    At these matrix sizes a second thread gains little, but on a grading machine busy with other work
    CPU threads that wait for each other were measured over 10× slower: one thread keeps the time budget fair.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_accuracy(acc, threshold, epochs):
    if not acc >= threshold:
        raise AssertionError(
            f"after {epochs} epochs the network is right on {100 * acc:.2f}% of the held-out test images; "
            f"it should reach at least {100 * threshold:.0f}%. Check that every mini-batch takes a step and "
            "that the loss goes down from epoch to epoch."
        )
