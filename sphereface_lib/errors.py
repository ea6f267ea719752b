"""One mechanism for a user's mistakes: every command line prints ``error: <message>`` and exits 2.

Library code raises :class:`UserError` (or a subclass such as ``ConfigError``) with a message that names the
file, line or parameter and the fix; :func:`run_command` turns it into the one line. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2

#: errors of the machine's storage that the user fixes (space, quota, permissions, read-only mount)
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class UserError(ValueError):
    """A user's mistake (bad file, parameter or input); the message names it and the fix."""


class OutputWriteError(UserError):
    """A result could not be written (disk full, quota, permissions); the previous file is intact."""


def read_utf8(path: str | os.PathLike, what: str) -> str:
    """The text of the file ``path``; a :class:`UserError` naming ``what``, the line and the byte when it is not
    UTF-8."""
    data = open(path, "rb").read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{what} {path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); save it as "
                        "UTF-8") from None


def storage_error(path: str | os.PathLike, exc: OSError) -> OutputWriteError | None:
    """An :class:`OutputWriteError` naming ``path`` when ``exc`` is the storage's fault, else None (a bug)."""
    if exc.errno not in _STORAGE_ERRNOS:
        return None
    return OutputWriteError(
        f"cannot write {os.fspath(path)}: {exc.strerror or exc}; the previous version of the file is intact. "
        "Free space (or fix the permissions) there, or write elsewhere (e.g. another run.out_dir)")


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with a :class:`UserError` printed as one ``error:`` line and exit status 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
