"""A worker's clean process that forks each run's shards: the engine imported once.

A Dask worker is a multi-threaded process: forking shards from it would copy locks held
by its other threads. Each worker starts one clean, single-threaded process instead
(``python -m tippingpoint.cluster.zygote``), which imports the engine once and waits.
For each run, the worker's task sends it the run (kind, config, shards) with three pipes
attached (``SCM_RIGHTS`` over a Unix socket pair); it forks a process that writes the
shards' records to the first pipe, its errors to the second, and its exit code to the
third, and answers with that process's PID (the task stops it with SIGTERM). A run then
costs a fork, not a fresh interpreter importing the engine (0.28 s of CPU per worker per
run, on the cores that send; see docs/PERFORMANCE.md).

The process dies with its worker (``PR_SET_PDEATHSIG``) and its runs with it: a lost
worker's load stops.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

__all__ = ["Started", "Zygote", "zygote"]

_HEADER = 8
"""A request: its length in 8 bytes (with the 3 pipes attached), then the pickled run."""

Started = tuple[int, int, int, int]
"""A run's process: its PID and the read ends of its records, errors and exit code."""


class Zygote:
    """The worker's side: start the process, hand it runs."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tippingpoint.cluster.zygote", str(os.getpid())],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            env=_environment(),
        )
        theirs.close()
        self.sock = mine
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """End the zygote (its runs go on to their end)."""
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def start(self, payload: bytes) -> Started:
        """Fork a process running ``payload`` (the pickled kind, config and shards)."""
        pipes = [os.pipe() for _ in range(3)]
        try:
            with self.lock:
                socket.send_fds(
                    self.sock, [len(payload).to_bytes(_HEADER, "big")], [w for _, w in pipes]
                )
                self.sock.sendall(payload)
                pid = int.from_bytes(_exactly(self.sock, _HEADER), "big")
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            for _, w in pipes:
                os.close(w)
        return pid, pipes[0][0], pipes[1][0], pipes[2][0]


def _environment() -> dict[str, str]:
    """The worker's environment, less the allocator setting a Dask nanny gives its
    worker (``MALLOC_TRIM_THRESHOLD_=65536``, from ``distributed.nanny.pre-spawn-environ``):
    glibc then hands memory back to the kernel at every free above 64 KiB, and the shards
    paid for it in CPU per request (docs/PERFORMANCE.md). A value the user set to
    something else stays."""
    env = dict(os.environ)
    try:
        import dask

        dasks = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    except ImportError:
        return env
    value = dasks.get("MALLOC_TRIM_THRESHOLD_")
    if value is not None and env.get("MALLOC_TRIM_THRESHOLD_") == str(value):
        del env["MALLOC_TRIM_THRESHOLD_"]
    return env


_zygote: Zygote | None = None
_made = threading.Lock()


def zygote() -> Zygote:
    """This worker's zygote, started on first use (again if it died). Start it from the
    worker's main thread (``Client.run`` runs there: see ``shard.prepare``): the kernel's
    parent-death signal follows the thread that started a process, not its process."""
    global _zygote
    with _made:
        if _zygote is None or not _zygote.alive():
            _zygote = Zygote()
        return _zygote


def _exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the worker's shard process ended")
        out += chunk
    return out


def _run(payload: bytes, out: int, err: int, status: int, sock: socket.socket) -> int:
    """In the forked process: the run's shards, one forked process each, their records
    to ``out``; the exit code to ``status`` at the end."""
    from tippingpoint.engine.hold import hold_child
    from tippingpoint.engine.runner import attack_child, run_children

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # run_children waits for its own
    sock.close()
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    kind, config, shards = pickle.loads(payload)
    child: Callable[..., int] = attack_child if kind == "attack" else hold_child

    def forward(_record: object, line: bytes) -> None:
        os.write(1, line)

    code = run_children([functools.partial(child, config, s) for s in shards], forward, kind)
    os.write(status, code.to_bytes(4, "big", signed=True))
    return code


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _main() -> int:
    """The clean process: runs from the socket on stdin, one forked process each."""
    from tippingpoint.engine.hold import hold_child  # noqa: F401 - imported once, here
    from tippingpoint.engine.runner import attack_child  # noqa: F401
    from tippingpoint.limits import raise_nofile
    from tippingpoint.procs import die_with_parent, fork_child

    die_with_parent(int(sys.argv[1]))
    raise_nofile()
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)  # fds 0-2 stay taken (libuv insists)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, _HEADER, 3)
        except OSError:
            return 0
        if not head:
            return 0  # the worker closed its end
        out, err, status = fds
        try:
            payload = _exactly(sock, int.from_bytes(head, "big"))
            pid = fork_child(functools.partial(_run, payload, out, err, status, sock))
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(pid.to_bytes(_HEADER, "big"))


if __name__ == "__main__":
    sys.exit(_main())
