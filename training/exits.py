"""How the training commands (``recserve train``, ``import``, ``evaluate``) start and end.

The README's table of exit codes is this one: 0 done, 1 the run failed (training diverged), 2 a
bad flag, file or repository, 3 the exported graph does not reproduce the model (nothing was
published).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3


def fail(problem: object, code: int) -> int:
    """Say ``error: <problem>`` on stderr, one line; returns ``code``, the status to exit with."""
    print(f"error: {problem}", file=sys.stderr)
    return code


def command_parser(
    prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """The parser of one command run on its own (``python -m training``, the tests), with the
    flags ``recserve <command>`` has."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, or a usage error naming what was given."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
