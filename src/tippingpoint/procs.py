"""Child processes: forked workers that never outlive their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Final

__all__ = [
    "describe_returncode",
    "describe_status",
    "die_with_parent",
    "fork_child",
    "stop_process",
]

_PR_SET_PDEATHSIG: Final = 1


def die_with_parent(parent: int) -> None:
    """In a forked child: ask the kernel for SIGTERM when ``parent`` dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:
        os._exit(0)


def describe_status(status: int) -> str:
    """``os.waitpid`` status as words: "exited with code 1", "killed by signal 9 (SIGKILL)"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def describe_returncode(code: int) -> str:
    """A ``Popen.returncode`` as words (negative: the signal that killed it)."""
    if code < 0:
        return f"killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with code {code}"


def fork_child(run: Callable[[], int], close_fds: Iterable[int] = ()) -> int:
    """Fork; the child closes ``close_fds``, dies with this process, runs ``run`` and exits
    with its code (0 on Ctrl-C, 1 with a traceback on a crash). Returns the child's pid."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for fd in close_fds:
            os.close(fd)
        die_with_parent(parent)
        code = run()
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
