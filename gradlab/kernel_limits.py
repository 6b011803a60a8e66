"""Limits on the kernel that runs a student's notebook under `nbgrader autograde`: memory, and a timeout that says
what happened (to the student in the feedback, to the instructor in the log, with the student's name).

Autograde runs student code with the instructor's rights. What bounds it without new infrastructure:
- time: nbgrader's per-cell timeout (``c.Execute.timeout``), which interrupts the cell and goes on;
- memory: ``LimitedExecute`` (in ``Autograde.autograde_preprocessors`` instead of nbgrader's Execute)
  starts each kernel with ``RLIMIT_DATA`` lowered to ``memory_limit_mb``. A cell that asks for more
  gets MemoryError (Python) or "can't allocate memory" (torch) and fails like any other error, instead of
  the machine's OOM killer ending the kernel, or the instructor's session;
- place: nbgrader runs each kernel in the student's copy, autograded/<student>/<assignment>/.

RLIMIT_DATA rather than RLIMIT_AS: since Linux 4.7 it counts what a process can actually write to (heap and
private mappings), not address space merely reserved, of which thread arenas and GPU drivers reserve
gigabytes without using them. Where the OS has no setrlimit (Windows) the kernel runs without a ceiling
and the log says so.
"""
import functools

from nbclient.util import run_sync
from nbgrader.preprocessors import Execute
from traitlets import Integer, default

from .autograde_repair import submission

try:
    import resource
except ImportError:  # Windows
    resource = None


class LimitedExecute(Execute):
    """nbgrader's Execute, with a memory ceiling on the kernel (configured like Execute: timeout etc. apply)."""

    memory_limit_mb = Integer(
        4096,
        help="Most memory (MiB) a student's kernel may write to (RLIMIT_DATA); 0 for no limit. Under autograde "
             "the MNIST lessons end at about 500 MiB (import torch alone takes about 250).",
    ).tag(config=True)

    @default("error_on_timeout")
    def _explained_timeout(self):
        # nbgrader's own says only "No reply from kernel before timeout"; this is what the student reads.
        message = f"the grader stopped this cell after {self.timeout} s. Does a loop in it (or in a function it calls) never end?"
        return {"ename": "CellTimeoutError", "evalue": message, "traceback": [f"CellTimeoutError: {message}"]}

    def on_cell_executed(self, **kwargs):
        super().on_cell_executed(**kwargs)
        if kwargs["execute_reply"]["content"].get("ename") == "CellTimeoutError":
            self.log.warning("%s: cell %d was stopped after %d s.", submission(self.resources), kwargs["cell_index"] + 1,
                             self.timeout)

    async def async_start_new_kernel(self, **kwargs):
        if self.memory_limit_mb:
            if resource is None:
                self.log.warning("This OS has no setrlimit: the kernel runs without a memory limit.")
            else:
                kwargs.setdefault("preexec_fn", functools.partial(_set_data_limit, _capped(self.memory_limit_mb)))
        await super().async_start_new_kernel(**kwargs)

    # nbclient binds the synchronous name, which nbconvert's executor calls, to its own coroutine.
    start_new_kernel = run_sync(async_start_new_kernel)


def _capped(megabytes):
    """The limit in bytes, never above the hard limit this process already has (lowering is always allowed)."""
    wanted = megabytes * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _set_data_limit(limit):
    # Runs in the kernel process between fork and exec; the hard limit too, so student code cannot raise it
    # (unless autograde runs as root, which may raise hard limits).
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
