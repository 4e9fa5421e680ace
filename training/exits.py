"""How the training commands (``recserve train``, ``recserve import``) end: exit codes, one line.

The README's table of exit codes is this one: 0 done, 1 the run failed (training diverged), 2 a
bad flag, file or repository, 3 the exported graph does not reproduce the model (nothing was
published).
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


def fail(problem: object, code: int) -> int:
    """Say ``error: <problem>`` on stderr, one line; returns ``code``, the status to exit with."""
    print(f"error: {problem}", file=sys.stderr)
    return code
