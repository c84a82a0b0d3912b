"""``mocapflow validate`` without a subcommand: the pose, fit and humanoid accuracy suites, each in its own process
(each pins CPUs or starts Ray its own way), collected into one JSON-ready dict."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

SUITES = ("pose", "fit", "humanoid")


class SuiteFailed(RuntimeError):
    def __init__(self, suite: str, returncode: int) -> None:
        super().__init__(f"the {suite} suite failed (exit {returncode})")
        self.suite, self.returncode = suite, returncode


def run_suites(
    suites: tuple[str, ...] = SUITES, on_start: Callable[[str], None] | None = None
) -> dict[str, object]:
    """Run ``mocapflow validate <suite> --json`` for each suite; the last stdout line of each is its figures."""
    results: dict[str, object] = {}
    for suite in suites:
        if on_start is not None:
            on_start(suite)
        proc = subprocess.run(
            [sys.executable, "-m", "mocapflow", "validate", suite, "--json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            raise SuiteFailed(suite, proc.returncode)
        results[suite] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results
