"""The kernel that runs a student's notebook under autograde, inside a bubblewrap sandbox.

What the kernel sees and may do (grader/README.md has the threat model):
- no network at all (its own network namespace); it talks to nbgrader over IPC sockets in a private folder;
- read-only: the system's /usr, the Python installation, the gradlab package and the course data, and the
  MNIST folder named by MNIST_DIR; nothing else of the machine (no notebooks/, gradebook, other students,
  home folders, the repository's .git);
- writable: a private /tmp and a private copy of this student's folder (memory-backed, size-capped);
  what it writes there is thrown away with the sandbox;
- a clean environment: only what the lessons need (MNIST_DIR, GRADLAB_DEVICE, GRADLAB_EPOCHS, ...);
- limits: memory (RLIMIT_DATA), CPU seconds, processes, size of a written file; its own PID namespace,
  so every process the student starts dies with the kernel;
- when autograde runs as root, the kernel runs as an otherwise unused user id (one per concurrent kernel).

Where bubblewrap is missing or the kernel forbids the namespaces it needs, ``require()`` raises
SandboxUnavailable with one sentence, and autograde refuses to run student code. ``Sandbox.enabled = False``
(or GRADLAB_UNSANDBOXED=1) is the documented opt-out for an instructor who accepts the risk.
"""
import fcntl
import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, List, Unicode
from traitlets.config import Configurable

import gradlab

HOME = "/home/student"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# The grader's thread settings too: an instructor who limits torch's threads on a shared machine means the kernels.
PASSED_ENV = ["MNIST_DIR", "GRADLAB_DEVICE", "GRADLAB_EPOCHS", "CUDA_VISIBLE_DEVICES", *THREAD_ENV]
UID_POOL = range(210_000, 211_000)


class SandboxUnavailable(RuntimeError):
    pass


class Sandbox(Configurable):
    """Settings of the student's sandbox (``c.Sandbox.<name>`` in nbgrader_config.py)."""

    enabled = Bool(True, help="Run student kernels in bubblewrap. False (or GRADLAB_UNSANDBOXED=1) runs them "
                              "with the grader's own rights: only for code you trust.").tag(config=True)
    memory_limit_mb = Integer(4096, help="MiB the kernel may write to (RLIMIT_DATA); the MNIST lessons need about "
                                         "600 under autograde.").tag(config=True)
    cpu_seconds = Integer(1200, help="CPU seconds the kernel may use in all (RLIMIT_CPU).").tag(config=True)
    max_processes = Integer(256, help="Processes and threads (torch starts one per core) the kernel's user may run "
                                      "(RLIMIT_NPROC).").tag(config=True)
    torch_threads = Integer(0, help="Threads for torch in the kernel (OMP_NUM_THREADS); 0 leaves the grader's own "
                                    "setting or torch's default. Parallel grading sets 1.").tag(config=True)
    max_file_mb = Integer(64, help="Largest file the kernel may write (RLIMIT_FSIZE).").tag(config=True)
    work_mb = Integer(256, help="Size of the kernel's writable copy of the student's folder.").tag(config=True)
    tmp_mb = Integer(256, help="Size of the kernel's private /tmp.").tag(config=True)
    passed_env = List(Unicode(), PASSED_ENV, help="Environment variables handed to the kernel.").tag(config=True)
    bwrap = Unicode("bwrap", help="The bubblewrap program.").tag(config=True)

    def active(self):
        return self.enabled and os.environ.get("GRADLAB_UNSANDBOXED") != "1"


@functools.lru_cache(maxsize=4)
def require(bwrap="bwrap"):
    """Check once that a sandbox can start here; raise SandboxUnavailable with the reason otherwise."""
    program = shutil.which(bwrap)
    if program is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so student code cannot be isolated: install it (Debian: "
            "apt-get install bubblewrap) or, accepting the risk, set c.Sandbox.enabled = False.")
    probe = [program, *_namespaces(), "--die-with-parent", *_system_binds(), "--proc", "/proc", "--dev", "/dev",
             "--", *_as_user(_probe_uid()), "/bin/true"]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create its namespaces here ({result.stderr.strip()[:200]}): allow unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1) or, accepting the risk, set c.Sandbox.enabled = False.")
    return program


def _probe_uid():
    return UID_POOL[-1] if os.geteuid() == 0 else None


def _namespaces():
    """All namespaces. As root, no user namespace: bubblewrap mounts with root's rights (the Python installation
    may sit in a folder only root can enter), and the command then drops to a pool user inside (``_as_user``)."""
    if os.geteuid() == 0:
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    return ["--unshare-all", "--cap-drop", "ALL"]


def _as_user(uid):
    """Inside the sandbox, as root: become ``uid`` with no capabilities left, so nothing runs as root and the
    limit on processes applies (it never applies to root)."""
    if uid is None:
        return []
    return ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all"]


def _system_binds():
    binds = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            binds += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            binds += ["--ro-bind", str(path), f"/{name}"]
    for etc in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "fonts", "alternatives", "ssl/certs"):
        binds += ["--ro-bind-try", f"/etc/{etc}", f"/etc/{etc}"]
    return binds


def _python_binds():
    """The interpreter, its standard library and site-packages, and gradlab with its data, read-only."""
    places = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix), Path(sys.executable).resolve().parent}
    package = Path(gradlab.__file__).resolve().parent
    places |= {package, package.parent / "data"}
    tops = sorted(p for p in places if p.exists() and not any(p != o and o in p.parents for o in places))
    return [arg for place in tops for arg in ("--ro-bind", str(place), str(place))]


MOUNTS = {"--ro-bind": 2, "--ro-bind-try": 2, "--bind": 2, "--dev-bind": 2, "--tmpfs": 1, "--symlink": 2}


def _open_parents(args):
    """Folders above every mount point, made 0755 first: bubblewrap makes the ones it needs 0700 (as root),
    and the kernel, no longer root, could not reach the interpreter in /root/.pyenv or /etc/passwd."""
    targets = []
    i = 0
    while i < len(args):
        width = MOUNTS.get(args[i])
        if width:
            targets.append(Path(args[i + width]))
            i += width
        i += 1
    mounted = set(targets)
    parents = sorted({a for t in targets for a in t.parents if a != Path("/") and a not in mounted},
                     key=lambda a: len(a.parts))
    return [arg for a in parents for arg in ("--perms", "0755", "--dir", str(a))]


class _UidLease:
    """An otherwise unused user id for one kernel, held (by a lock file) while the kernel lives."""

    def __init__(self):
        self.uid, self._file = None, None
        if os.geteuid() != 0:
            return
        for uid in UID_POOL[:-1]:
            handle = open(Path(tempfile.gettempdir()) / f"gradlab-uid-{uid}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self.uid, self._file = uid, handle
            return
        raise SandboxUnavailable("every sandbox user id is in use: too many kernels at once")

    def release(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class SandboxedKernelManager(AsyncKernelManager):
    """An ipykernel started inside bubblewrap, connected over IPC sockets in a private folder."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sandbox = Sandbox(parent=self)
        self.private = Path(tempfile.mkdtemp(prefix="gradlab-kernel-"))
        self.transport = "ipc"
        self.ip = str(self.private / "kernel")
        self.connection_file = str(self.private / "kernel.json")
        self.lease = None
        self.workdir = None

    async def _async_pre_start_kernel(self, **kw):
        require(self.sandbox.bwrap)
        self.lease = _UidLease()
        source = Path(kw.pop("cwd", None) or os.getcwd())
        self.workdir = source.name or "work"
        copy = self.private / "submission"
        # Links stay links: followed, a submitted link to a file of the grader's machine would bring its content in.
        shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns("*.ipynb"))
        (self.private / "passwd").write_text(f"student:x:{self._uid()}:{self._uid()}:student:{HOME}:/bin/sh\n")
        (self.private / "group").write_text(f"student:x:{self._uid()}:\n")
        if self.lease.uid is not None:
            for path in [self.private, *self.private.rglob("*")]:
                os.chown(path, self.lease.uid, self.lease.uid, follow_symlinks=False)
        kw["cwd"] = str(self.private)
        # The kernel's own messages (ipykernel's notes, a crash's last words) go to a log, not the grader's console.
        self.log_file = open(self.private / "kernel.log", "wb")
        kw["stdout"] = kw["stderr"] = self.log_file
        kw["env"] = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        kw["preexec_fn"] = functools.partial(_limits, self.sandbox.memory_limit_mb, self.sandbox.cpu_seconds,
                                             self.sandbox.max_processes, self.sandbox.max_file_mb, self.lease.uid)
        self.kernel_spec.interrupt_mode = "message"  # a signal would reach bubblewrap, not the kernel
        return await super()._async_pre_start_kernel(**kw)

    def write_connection_file(self, **kwargs):
        super().write_connection_file(**kwargs)
        if self.lease is not None and self.lease.uid is not None:
            os.chown(self.connection_file, self.lease.uid, self.lease.uid)

    def _uid(self):
        return self.lease.uid if self.lease and self.lease.uid is not None else os.getuid()

    def format_kernel_cmd(self, extra_arguments=None):
        return self.bwrap_args() + super().format_kernel_cmd(extra_arguments)

    def bwrap_args(self):
        s = self.sandbox
        work = f"{HOME}/{self.workdir}"
        args = [
            require(s.bwrap), *_namespaces(), "--die-with-parent", "--new-session",
            *_system_binds(), *_python_binds(),
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(s.tmp_mb * 2**20), "--perms", "1777", "--tmpfs", "/tmp",
            "--size", str(s.work_mb * 2**20), "--perms", "1777", "--tmpfs", HOME,
            "--ro-bind", str(self.private / "submission"), f"/run/submission",
            "--ro-bind", str(self.private / "passwd"), "/etc/passwd",
            "--ro-bind", str(self.private / "group"), "/etc/group",
            "--bind", str(self.private), str(self.private),
            "--clearenv",
            "--setenv", "HOME", HOME, "--setenv", "USER", "student", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "--setenv", "MPLBACKEND", "Agg", "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
            "--setenv", "IPYTHONDIR", "/tmp/ipython", "--setenv", "PYTHONNOUSERSITE", "1",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "NBGRADER_EXECUTION", "autograde", "--setenv", "GRADLAB_RECORD", "1",
        ]
        if s.torch_threads:
            for name in THREAD_ENV:
                args += ["--setenv", name, str(s.torch_threads)]
        for name in s.passed_env:
            value = os.environ.get(name)
            if value and not (s.torch_threads and name in THREAD_ENV):
                args += ["--setenv", name, value]
                if name == "MNIST_DIR" and Path(value).is_dir():
                    args += ["--ro-bind", str(Path(value).resolve()), value]
        for device in sorted(Path("/dev").glob("nvidia*")):
            args += ["--dev-bind", str(device), str(device)]
        mounts = args[1:]
        args = args[:1] + _open_parents(mounts) + mounts
        # Copy the student's files into the writable folder, then become the kernel (which gets PID 2).
        args += ["--chdir", HOME, "--", *_as_user(self.lease.uid), "/bin/sh", "-c",
                 'mkdir -p "$1" && cp -R /run/submission/. "$1/" 2>/dev/null; cd "$1" && shift && exec "$@"', "sh", work]
        return args

    async def _async_cleanup_resources(self, restart=False):
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            if getattr(self, "log_file", None) is not None:
                self.log_file.close()
            if self.lease is not None:
                self.lease.release()
            shutil.rmtree(self.private, ignore_errors=True)


def _limits(memory_mb, cpu_seconds, processes, file_mb, uid):
    """Between fork and exec of the sandbox: limits that every process inside inherits."""
    def cap(which, value):
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))

    if memory_mb:
        cap(resource.RLIMIT_DATA, memory_mb * 2**20)
    if cpu_seconds:
        cap(resource.RLIMIT_CPU, cpu_seconds)
    if file_mb:
        cap(resource.RLIMIT_FSIZE, file_mb * 2**20)
    cap(resource.RLIMIT_CORE, 0)
    if processes:
        # Counted per user: exact for a pool user of its own; for an ordinary user, on top of what it runs now.
        cap(resource.RLIMIT_NPROC, processes if uid is not None else processes + _processes_of(os.getuid()))


def _processes_of(uid):
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        line = next((l for l in text.splitlines() if l.startswith("Uid:")), "")
        count += line.split()[1:2] == [str(uid)]
    return count
