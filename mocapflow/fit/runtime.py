"""Process set-up for fits, done when a run starts (never at import): XLA thread flags and JAX's compilation cache.

The thread flags must be in the environment before JAX initialises its CPU backend, so the pinned worker sets
them right after taking its CPU lease (``tasks/fit_ray.py``). This module imports JAX only inside functions.
"""

from __future__ import annotations

import logging
import platform
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")


def xla_flags(threads: int, existing: str = "") -> str:
    """``existing`` XLA_FLAGS with the CPU thread flags set for ``threads`` threads (other flags kept)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    kept = [f for f in existing.split() if not f.startswith(_THREAD_FLAGS)]
    eigen = "true" if threads > 1 else "false"
    return " ".join(
        [*kept, f"--xla_cpu_multi_thread_eigen={eigen}", f"intra_op_parallelism_threads={threads}"]
    )


def cpu_model_name() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo, else platform.processor(), else the machine type)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def jax_cache_folder(cache_root: Path) -> Path:
    """One compilation-cache folder per machine type and CPU model below ``cache_root``."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{platform.machine()}-{cpu_model_name()}".lower()).strip("-")
    return Path(cache_root) / (slug or "unknown-cpu")


def configure_jax_cache(cache_root: Path, min_compile_seconds: float = 0.5) -> Path:
    """Point JAX's persistent compilation cache at :func:`jax_cache_folder` (idempotent); return the folder."""
    import jax

    folder = jax_cache_folder(cache_root)
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    logger.debug("JAX compilation cache at %s", folder)
    return folder
