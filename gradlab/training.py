"""Training plumbing for the MNIST lessons (6 and 7): epoch counts, mini-batch indices, timing, live curves.

Nothing here computes a loss or a gradient: that is the student's work in the notebooks. ``fit`` only
calls the epoch function it is given, times it, and draws what it returns.
"""
import os
import time
from dataclasses import dataclass, field

import torch

EPOCHS_VAR = "GRADLAB_EPOCHS"


def epochs_from_env(default, var=EPOCHS_VAR):
    """The number of training epochs: the environment variable ``var`` when set, else ``default``.

    Tests and the grader lower it (``GRADLAB_EPOCHS=2``); a student can raise it.
    """
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        epochs = int(raw)
    except ValueError:
        epochs = 0
    if epochs < 1:
        raise ValueError(f"{var}={raw!r} should be a whole number of epochs, at least 1 (or unset it for {default}).")
    return epochs


def minibatches(n, batch_size, generator=None, device=None):
    """Yield index tensors that together cover ``range(n)`` once, in a new random order each call.

    They are consecutive slices of one permutation: ``X[idx]`` then picks a whole batch in one
    tensor operation, with no per-sample Python. The last batch is smaller when ``batch_size``
    does not divide ``n``. The permutation is drawn on the CPU (so a CPU ``generator`` gives the
    same batches on every device) and moved to ``device`` once per epoch.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size should be a positive whole number, got {batch_size!r}.")
    order = torch.randperm(n, generator=generator)
    if device is not None:
        order = order.to(device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_val_split(images, labels, val_fraction=0.1, seed=0):
    """Split (images, labels) into a training and a validation part: ((X_train, y_train), (X_val, y_val)).

    A seeded permutation decides who goes where, so every lesson and every run holds out the same images.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they should match one to one.")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction should be between 0 and 1, got {val_fraction}.")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).to(images.device)
    n_val = max(1, round(val_fraction * len(images)))
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def synchronize(device):
    """Wait until the GPU has finished queued work, so that a timer measures it (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class History:
    """What ``fit`` saw, one entry per epoch."""

    label: str = ""
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    @property
    def epochs(self):
        return list(range(1, len(self.train_loss) + 1))

    def seconds_per_epoch(self):
        """Median epoch time: robust to a slow first epoch (warm-up) or a busy machine."""
        return sorted(self.seconds)[len(self.seconds) // 2]


def _in_notebook():
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


class LiveCurves:
    """A loss plot and an accuracy plot that redraw in place in a notebook after every epoch."""

    def __init__(self, title=""):
        import matplotlib.pyplot as plt

        self.fig, (self.ax_loss, self.ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
        self.fig.suptitle(title)
        self.handle = None
        if _in_notebook():
            from IPython.display import display

            self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)  # shown through the display handle only, not again at the end of the cell

    def update(self, history):
        ax_loss, ax_acc = self.ax_loss, self.ax_acc
        ax_loss.clear()
        ax_acc.clear()
        ax_loss.plot(history.epochs, history.train_loss, "o-", label="training loss")
        ax_loss.plot(history.epochs, history.val_loss, "s-", label="validation loss")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("cross-entropy")
        ax_loss.legend()
        ax_acc.plot(history.epochs, [100 * a for a in history.val_acc], "s-", color="C1", label="validation accuracy")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.legend(loc="lower right")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
        self.fig.tight_layout()
        if self.handle is not None:
            self.handle.update(self.fig)


def fit(run_epoch, evaluate, epochs, *, label="", device="cpu", live=True, max_lines=10):
    """Train for ``epochs`` epochs and show the progress; return a ``History``.

    run_epoch(epoch) -> mean training loss of that epoch (a float); ``epoch`` counts from 0.
    evaluate()       -> (validation loss, validation accuracy as a fraction).
    Only ``run_epoch`` is timed. At most about ``max_lines`` progress lines are printed (always the
    first and the last epoch); with ``live`` the curves redraw after every epoch.
    """
    history = History(label=label)
    curves = LiveCurves(label) if live else None
    every = max(1, -(-epochs // max_lines))
    for epoch in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        train_loss = float(run_epoch(epoch))
        synchronize(device)
        history.seconds.append(time.perf_counter() - start)
        val_loss, val_acc = evaluate()
        history.train_loss.append(train_loss)
        history.val_loss.append(float(val_loss))
        history.val_acc.append(float(val_acc))
        if curves is not None:
            curves.update(history)
        if epoch % every == 0 or epoch == epochs - 1:
            print(
                f"{label + ': ' if label else ''}epoch {epoch + 1:>{len(str(epochs))}}/{epochs}  "
                f"train loss {train_loss:.4f}  val loss {history.val_loss[-1]:.4f}  "
                f"val acc {100 * history.val_acc[-1]:.2f}%  {history.seconds[-1]:.2f} s"
            )
    return history


def compare_histories(*histories):
    """One figure: validation loss and accuracy of several runs, epoch by epoch."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
    for h in histories:
        ax_loss.plot(h.epochs, h.val_loss, "o-", label=h.label)
        ax_acc.plot(h.epochs, [100 * a for a in h.val_acc], "o-", label=h.label)
    ax_loss.set_ylabel("validation loss")
    ax_acc.set_ylabel("validation accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
