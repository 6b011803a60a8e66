import os
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"

# Tests never download MNIST: they read the offline copy beside the repository, as CI does.
if not os.environ.get("MNIST_DIR") and SHARED_MNIST.is_dir():
    os.environ["MNIST_DIR"] = str(SHARED_MNIST)

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Several pytest processes (`make test` runs one per core) share the cores: torch's default of one thread per core
# in each of them, and in every kernel they start, makes an epoch up to ten times slower (FIELD-NOTES). Kernels
# inherit this, sandboxed ones too (gradlab.instructor.sandbox passes it on).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")

# The test files that take minutes (measured on 2 cores), longest first: `make test` hands whole files to its
# processes in collection order, and a long file started last would leave the other processes idle at the end.
LONGEST_FIRST = ["test_notebooks.py", "test_browser.py", "test_grader_examples.py", "test_grader_attacks.py",
                 "test_bench.py", "test_grade_parallel.py", "test_grader_pipeline.py", "test_class_report.py",
                 "test_feedback_page.py", "test_make_lab.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def repo_root():
    return ROOT
