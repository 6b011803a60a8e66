"""`make lab` on a copy of the repository: it generates the student versions and serves them."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def checkout(repo_root, tmp_path):
    """The repository's files as a fresh clone would have them, sharing the already-built .venv."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo_root,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    copy = tmp_path / "course"
    for name in files:
        if (repo_root / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / name, copy / name)
    (copy / ".venv").symlink_to(repo_root / ".venv")
    return copy


# The copy shares the repository's .venv. Were `make` to reinstall there (when pyproject.toml is newer than the
# stamp), the shared editable install would point at this temporary copy, deleted after the test, and every later
# `import gradlab` outside the repository root would fail. `-o` tells make to leave the stamp as it is.
KEEP_SHARED_VENV = ("-o", ".venv/.installed")


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def test_make_lab_serves_the_student_versions(checkout):
    port, token = free_port(), "gradlab-test-token"
    args = f"--no-browser --allow-root --port={port} --ServerApp.token={token}"
    server = subprocess.Popen(
        ["make", *KEEP_SHARED_VENV, "lab", f"LAB_ARGS={args}"], cwd=checkout, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"make lab exited early:\n{server.stdout.read()}"
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/status?token={token}")
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not answer within 240 s"
                time.sleep(0.5)
        assert status == 200 and "started" in json.loads(body)
        status, page = get(f"http://127.0.0.1:{port}/lab/tree/my-work?token={token}")
        assert status == 200 and "JupyterLab" in page

        sources = sorted(checkout.glob("notebooks/[0-9]*/*.ipynb"))
        assert sources
        for source in sources:
            student = checkout / "my-work" / source.relative_to(checkout / "notebooks")
            text = student.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
            assert "raise NotImplementedError" in text
        # With everything in place, a second `make lab` has nothing left to generate.
        assert subprocess.run(["make", *KEEP_SHARED_VENV, "-q", "student"], cwd=checkout).returncode == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
