"""Logging set-up for entry points; library modules only call `logging.getLogger(__name__)`."""

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Route every facestream logger to stderr at `level` (idempotent)."""
    logging.basicConfig(level=level.upper(), format=FORMAT, datefmt="%H:%M:%S", force=True)
