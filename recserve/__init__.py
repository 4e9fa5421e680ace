"""The ``recserve`` command over both halves of the project: ``serve`` and ``train``."""
