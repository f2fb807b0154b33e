"""A real SSH server on loopback for `cluster ssh` tests (asyncssh's server side).

``python -m tests.ssh_server PORT DIR``: host key ``DIR/host_key``, the one client key
allowed ``DIR/client_key.pub``; each command runs in a shell of this machine, in its own
process group, killed when its channel closes (as sshd does on a hang-up). Prints
"ready" once listening; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncssh


async def _run(process: asyncssh.SSHServerProcess[bytes]) -> None:
    proc = await asyncio.create_subprocess_shell(
        str(process.command),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
    closed = asyncio.ensure_future(process.wait_closed())
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait([closed, exited], return_when=asyncio.FIRST_COMPLETED)
    if not exited.done():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        await proc.wait()
    else:
        process.exit(proc.returncode or 0)


async def _main(port: int, directory: Path) -> None:
    server = await asyncssh.create_server(
        asyncssh.SSHServer,
        "127.0.0.1",
        port,
        server_host_keys=[str(directory / "host_key")],
        authorized_client_keys=str(directory / "client_key.pub"),
        process_factory=_run,
        encoding=None,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), Path(sys.argv[2])))
