"""Real servers for the grading tests, started on 127.0.0.1 and stopped by the test: PostgreSQL and a Dask cluster."""
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found or not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found[-1]


@contextlib.contextmanager
def postgres():
    """A throw-away PostgreSQL server with a database `gradebook`; yields its SQLAlchemy URL.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (FIELD-NOTES)."""
    folder = Path(tempfile.mkdtemp(prefix="gradlab-pg-"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    run(_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "grader")
    run(_pg_bin("pg_ctl"), "-D", str(data), "-o", f"-k {folder} -h 127.0.0.1 -p {port}", "-l", str(folder / "log"),
        "-w", "start")
    try:
        run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "grader", "gradebook")
        yield f"postgresql+psycopg2://grader@127.0.0.1:{port}/gradebook"
    finally:
        run(_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def dask_cluster(workers=2):
    """`dask scheduler` and ``workers`` `dask worker` processes (one thread each); yields (address, worker procs)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    logs = tempfile.TemporaryFile()
    scheduler = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                                 stdout=logs, stderr=logs)
    procs = []
    try:
        _wait_for(port)
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--host", "127.0.0.1", "--dashboard-address", ":0", "--no-nanny"], stdout=logs, stderr=logs))
        _wait_for_workers(address, workers)
        yield address, procs
    finally:
        for p in procs + [scheduler]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs + [scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for(port, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _wait_for_workers(address, count, seconds=120):
    from dask.distributed import Client

    with Client(address, timeout=seconds) as client:
        client.wait_for_workers(count, timeout=seconds)
