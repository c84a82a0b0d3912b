"""Prefect's environment for mocapflow commands, applied when a command starts (never at import time).

Defaults only: a value the user exported wins. Analytics are off (offline telemetry raises "database is locked" and
DNS errors here) and the temporary server gets longer to start on a loaded 2-core machine.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def prepare_prefect_env() -> dict[str, str]:
    """Set Prefect's defaults in this process's environment (before prefect is imported); returns what it set."""
    applied = {}
    for k, v in DEFAULTS.items():
        if k not in os.environ:
            os.environ[k] = v
            applied[k] = v
    return applied
