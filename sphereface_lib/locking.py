"""One writer per output: the lock every writer of a folder takes (a training run folder, a data_prep output).

The lock is an OS file lock (``filelock``), released when its holder exits, even by SIGKILL; beside it an owner
file names the holder (pid, host, start time, command), so a second writer is refused with one line naming the
first instead of both writing the same files.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import UserError, storage_error


class OutputBusy(UserError):
    """Another process writes the same output; the message names that process and the fix."""


def _owner(owner_path: Path) -> str:
    try:
        o = json.loads(owner_path.read_text())
        return f"process {o['pid']} on host {o['host']} (started {o['started']}: {o['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def writer_lock(lock_path: Path, owner_path: Path, what: str, fix: str,
                busy: type[UserError] = OutputBusy) -> Iterator[None]:
    """Hold ``lock_path`` (the owner's pid, host, start time and command in ``owner_path``) while the block runs;
    when another process holds it raise ``busy``: "``what`` is in use by <that process>; ``fix``"."""
    from .data.packed import atomic_write_text

    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise busy(f"{what} is in use by {_owner(owner_path)}; {fix}") from None
    except OSError as exc:
        raise (storage_error(lock_path, exc) or exc) from exc
    try:
        atomic_write_text(owner_path, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(sys.argv)}) + "\n")
        yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


@contextmanager
def output_lock(out: Path, flag: str = "--out") -> Iterator[None]:
    """The lock of a data_prep output ``out`` (a folder that may not exist yet): ``.<name>.lock`` beside it,
    held for the whole command, so a second command on the same ``out`` stops with one line naming the first."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (storage_error(out.parent, exc) or UserError(
            f"{flag} {out}: cannot create its folder ({exc.strerror}); choose another {flag}")) from None
    with writer_lock(out.parent / f".{out.name}.lock", out.parent / f".{out.name}.lock.owner", f"{flag} {out}",
                     f"one output takes one writer: wait for that command to end, or choose another {flag}"):
        yield
