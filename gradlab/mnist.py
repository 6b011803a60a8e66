"""MNIST as whole tensors: images float32 in [0, 1] of shape (N, 784), labels int64 of shape (N,).

Where the four IDX files come from, first match wins:
1. the directory named by the ``MNIST_DIR`` environment variable (used as is, any image count);
2. the project's cache ``data/mnist/``;
3. a download of the official files (md5-verified, written atomically into the cache).
"""
import gzip
import hashlib
import os
import struct
import sys
import urllib.error
import urllib.request
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "MNIST_DIR"
CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
# Public mirrors of LeCun, Cortes and Burges' files; the first is the one torchvision tries first.
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
# Official md5 sums, as published with the data set.
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049

MNIST = namedtuple("MNIST", "train_images train_labels test_images test_labels")


class MNISTError(RuntimeError):
    """MNIST could not be found, downloaded or read."""


def _how_to_fix(cache_dir):
    return (
        f"To use MNIST without a network, put the four files ({', '.join(FILES)}) in a folder and set "
        f"{ENV_VAR}=/that/folder, or copy them into {cache_dir}."
    )


def md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name, cache_dir, timeout):
    cache_dir.mkdir(parents=True, exist_ok=True)
    target, part = cache_dir / name, cache_dir / (name + ".part")
    errors = []
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + name, timeout=timeout) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    done += len(block)
                    if total:
                        print(f"\rdownloading {name}: {100 * done // total:3d}%", end="", file=sys.stderr)
                print(file=sys.stderr)
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{mirror}: {getattr(err, 'reason', err)}")
            part.unlink(missing_ok=True)
            continue
        if md5(part) != FILES[name]:
            part.unlink(missing_ok=True)
            errors.append(f"{mirror}: the file's md5 does not match the official one")
            continue
        os.replace(part, target)  # atomic: a half-written file never carries the final name
        return target
    raise MNISTError(
        f"Could not download {name} ({'; '.join(errors)}). {_how_to_fix(cache_dir)}"
    )


def find_files(cache_dir=CACHE_DIR, download=True, timeout=5.0):
    """Return {file name: path} for the four files, downloading what the cache lacks."""
    env_dir = os.environ.get(ENV_VAR)
    if env_dir:
        folder = Path(env_dir).expanduser()
        missing = [n for n in FILES if not (folder / n).is_file()]
        if missing:
            raise MNISTError(
                f"{ENV_VAR}={env_dir} but {folder} lacks {', '.join(missing)}. "
                f"Point {ENV_VAR} at a folder holding all four files ({', '.join(FILES)}), or unset it."
            )
        return {n: folder / n for n in FILES}
    cache_dir = Path(cache_dir)
    paths = {}
    for name in FILES:
        cached = cache_dir / name
        if cached.is_file():
            paths[name] = cached
        elif download:
            paths[name] = _download(name, cache_dir, timeout)
        else:
            raise MNISTError(f"{name} is not in {cache_dir} and downloading is off. {_how_to_fix(cache_dir)}")
    return paths


def read_idx(path, magic):
    """Read one gzip-compressed IDX file into a uint8 NumPy array, trusting only its header."""
    ndim = 3 if magic == IMAGES_MAGIC else 1
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, OSError) as err:
        raise MNISTError(f"{path} is not a complete gzip file ({err}). Delete it and fetch it again.") from None
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise MNISTError(f"{path} is too short to hold an IDX header. Delete it and fetch it again.")
    found_magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header_size])
    if found_magic != magic:
        raise MNISTError(
            f"{path} has IDX magic number {found_magic}, expected {magic}: it is not the file its name says."
        )
    expected = int(np.prod(dims))
    if len(raw) - header_size != expected:
        raise MNISTError(
            f"{path} should hold {expected} bytes after its header for shape {tuple(dims)}, "
            f"but holds {len(raw) - header_size}: it is truncated or damaged. Delete it and fetch it again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _split(images_path, labels_path, device):
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise MNISTError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels.")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x.to(device), y.to(device)


def load_mnist(device=None, cache_dir=CACHE_DIR, download=True, timeout=5.0):
    """MNIST(train_images, train_labels, test_images, test_labels) on ``device`` (default: CPU).

    Images are float32 in [0, 1] with shape (N, 784); labels are int64 with shape (N,).
    """
    paths = find_files(cache_dir, download, timeout)
    device = torch.device("cpu") if device is None else device
    train = _split(paths["train-images-idx3-ubyte.gz"], paths["train-labels-idx1-ubyte.gz"], device)
    test = _split(paths["t10k-images-idx3-ubyte.gz"], paths["t10k-labels-idx1-ubyte.gz"], device)
    return MNIST(*train, *test)
