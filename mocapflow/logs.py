"""Logging set-up for the CLI (library code only ever calls ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler


def configure_cli_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=Console(stderr=True), rich_tracebacks=True, show_path=False)],
        force=True,
    )
    for noisy in (
        "absl",
        "tensorflow",
        "jax._src",
        "h5py",
        "matplotlib",
        "botocore",
        "s3fs",
        "fsspec",
        "httpx",
        "httpcore",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
