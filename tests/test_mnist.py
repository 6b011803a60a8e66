import gzip
import http.server
import shutil
import struct
import threading
import time
from functools import partial

import pytest
import torch

from gradlab import mnist
from gradlab.mnist import FILES, MNISTError, load_mnist, md5


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No MNIST_DIR, an empty cache, and mirrors that refuse connections at once (nothing listens on port 9)."""
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(mnist, "MIRRORS", ["http://127.0.0.1:9/"])
    return tmp_path / "cache"


def write_idx(path, magic, array_bytes, dims):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(f">{1 + len(dims)}I", magic, *dims) + array_bytes)


def small_mnist_dir(folder, n_train=5, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, b"".join(bytes([i]) * 784 for i in range(n)), (n, 28, 28))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, bytes(i % 10 for i in range(n)), (n,))
    return folder


def test_shared_offline_copy_loads_with_counts_from_the_headers():
    data = load_mnist()
    assert data.train_images.shape == (10_000, 784) and data.test_images.shape == (10_000, 784)
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert sorted(data.test_labels.unique().tolist()) == list(range(10))


def test_image_count_comes_from_the_header(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DIR", str(small_mnist_dir(tmp_path / "m", n_train=5, n_test=3)))
    data = load_mnist(device=torch.device("cpu"))
    assert data.train_images.shape == (5, 784) and data.test_labels.tolist() == [0, 1, 2]
    assert data.train_images[1, 0] == pytest.approx(1 / 255)


def test_mnist_dir_missing_files_names_them(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    with pytest.raises(MNISTError, match="lacks train-images-idx3-ubyte.gz, train-labels"):
        load_mnist()


def test_no_data_and_no_network_fails_fast_saying_what_to_do(offline):
    start = time.perf_counter()
    with pytest.raises(MNISTError, match="set MNIST_DIR=/that/folder, or copy them into"):
        load_mnist(cache_dir=offline)
    assert time.perf_counter() - start < 10
    assert not list(offline.glob("*")), "a failed download must leave nothing behind"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"not gzip at all"), "is not a complete gzip file"),
    (lambda p: p.write_bytes(gzip.compress(struct.pack(">4I", 2049, 1, 28, 28))), "magic number 2049, expected 2051"),
    (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100])), "truncated or damaged"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "is not a complete gzip file"),
])
def test_damaged_files_are_named(monkeypatch, tmp_path, damage, message):
    folder = small_mnist_dir(tmp_path / "m")
    target = folder / "train-images-idx3-ubyte.gz"
    damage(target)
    monkeypatch.setenv("MNIST_DIR", str(folder))
    with pytest.raises(MNISTError, match=message) as err:
        load_mnist()
    assert "train-images-idx3-ubyte.gz" in str(err.value)


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP mirror on 127.0.0.1 serving a small MNIST."""
    served = small_mnist_dir(tmp_path / "served")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_md5_and_caches(monkeypatch, tmp_path, mirror):
    served, url = mirror
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(mnist, "MIRRORS", ["http://127.0.0.1:9/", url])  # the first mirror is down
    monkeypatch.setattr(mnist, "FILES", {name: md5(served / name) for name in FILES})
    cache = tmp_path / "cache"
    data = load_mnist(cache_dir=cache)
    assert data.train_images.shape == (5, 784)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no .part left behind

    shutil.rmtree(served)  # a verified cache is never downloaded again
    assert load_mnist(cache_dir=cache).test_images.shape == (3, 784)


def test_download_with_wrong_md5_is_rejected_and_not_kept(monkeypatch, tmp_path, mirror):
    _, url = mirror
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(mnist, "MIRRORS", [url])
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError, match="md5 does not match the official one"):
        load_mnist(cache_dir=cache)
    assert not list(cache.iterdir())
