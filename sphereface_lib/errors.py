"""One mechanism for a user's mistakes: every command line prints ``error: <message>`` and exits 2.

Library code raises :class:`UserError` (or a subclass such as ``ConfigError``) with a message that names the
file, line or parameter and the fix; :func:`run_command` turns it into the one line. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A user's mistake (bad file, parameter or input); the message names it and the fix."""


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with a :class:`UserError` printed as one ``error:`` line and exit status 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
