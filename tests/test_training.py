"""The training plumbing of lessons 6 and 7: epoch counts, mini-batch indices, the split, fit's progress."""
import pytest
import torch

from gradlab.training import History, compare_histories, epochs_from_env, fit, minibatches, train_val_split


def test_epochs_come_from_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv("GRADLAB_EPOCHS", raising=False)
    assert epochs_from_env(10) == 10
    monkeypatch.setenv("GRADLAB_EPOCHS", " 2 ")
    assert epochs_from_env(10) == 2


@pytest.mark.parametrize("raw", ["0", "-3", "two", "1.5"])
def test_a_bad_epoch_count_is_a_clear_error(monkeypatch, raw):
    monkeypatch.setenv("GRADLAB_EPOCHS", raw)
    with pytest.raises(ValueError, match="GRADLAB_EPOCHS=.* should be a whole number of epochs, at least 1"):
        epochs_from_env(10)


@pytest.mark.parametrize("n, batch_size", [(10, 3), (64, 64), (5, 8), (100, 10)])
def test_minibatches_cover_every_index_once(n, batch_size):
    batches = list(minibatches(n, batch_size, torch.Generator().manual_seed(0)))
    assert sorted(torch.cat(batches).tolist()) == list(range(n))
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert 1 <= len(batches[-1]) <= batch_size


def test_minibatches_are_reproducible_and_reshuffled_each_epoch():
    gen = torch.Generator().manual_seed(3)
    first, second = torch.cat(list(minibatches(50, 7, gen))), torch.cat(list(minibatches(50, 7, gen)))
    assert not torch.equal(first, second)
    again = torch.cat(list(minibatches(50, 7, torch.Generator().manual_seed(3))))
    assert torch.equal(first, again)


def test_minibatches_reject_a_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size should be a positive whole number"):
        next(minibatches(10, 0))


def test_the_split_is_disjoint_complete_and_fixed_by_its_seed():
    X = torch.arange(50, dtype=torch.float32)[:, None].repeat(1, 3)
    y = torch.arange(50)
    (X_tr, y_tr), (X_val, y_val) = train_val_split(X, y, val_fraction=0.2, seed=1)
    assert len(y_val) == 10 and len(y_tr) == 40
    assert sorted(torch.cat([y_tr, y_val]).tolist()) == list(range(50))
    assert torch.equal(X_tr[:, 0].long(), y_tr) and torch.equal(X_val[:, 0].long(), y_val)  # rows stay paired
    (_, y_tr2), _ = train_val_split(X, y, val_fraction=0.2, seed=1)
    assert torch.equal(y_tr, y_tr2)


def test_the_split_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        train_val_split(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(torch.zeros(5, 2), torch.zeros(5), val_fraction=1.5)


def test_fit_records_every_epoch_and_prints_a_bounded_number_of_lines(capsys):
    losses = iter([1.0 / (e + 1) for e in range(25)])
    history = fit(lambda epoch: next(losses), lambda: (0.5, 0.9), 25, label="run", live=False, max_lines=5)
    assert history.train_loss == [1.0 / (e + 1) for e in range(25)]
    assert history.val_acc == [0.9] * 25 and len(history.seconds) == 25
    lines = capsys.readouterr().out.strip().splitlines()
    assert 2 <= len(lines) <= 6
    assert lines[0].startswith("run: epoch  1/25") and lines[-1].startswith("run: epoch 25/25")
    assert "val acc 90.00%" in lines[-1]


def test_seconds_per_epoch_is_the_median():
    assert History(seconds=[5.0, 0.1, 0.2]).seconds_per_epoch() == 0.2


def test_histories_can_be_compared_in_one_figure():
    a = History(label="a", train_loss=[1, 0.5], val_loss=[1, 0.6], val_acc=[0.5, 0.7], seconds=[1, 1])
    fig = compare_histories(a, History(label="b", train_loss=[1], val_loss=[0.9], val_acc=[0.6], seconds=[1]))
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["a", "b"]
