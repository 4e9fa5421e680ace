"""``python -m recserve``: the same as the ``recserve`` command."""

from __future__ import annotations

from recserve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
