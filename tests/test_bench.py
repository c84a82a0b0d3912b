"""``mocapflow bench``: every key is printed with the right type; figures are never asserted (shared machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import KEYS, TARGETS, met
from benchmarks.timing import stats_of, time_calls

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str, timeout: int) -> dict:
    cmd = [sys.executable, "-m", "mocapflow", "bench", "--json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check_report(report: dict, sections: set[str]) -> None:
    assert set(report["keys"]) == set(KEYS)
    for key, section in KEYS.items():
        value = report["keys"][key]
        if section in sections:
            assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
            assert value == value and value >= 0, (key, value)  # not NaN
        else:
            assert value is None, (key, value)
    assert set(report["targets"]) == set(TARGETS) and set(report["targets_met"]) == set(TARGETS)
    for key, ok in report["targets_met"].items():
        assert ok is None if report["keys"][key] is None else isinstance(ok, bool)
    load = report["load_average"]
    assert len(load["start"]) == 3 and len(load["end"]) == 3
    assert all(s in load for s in sections)
    assert report["machine"]["cpu_count"] == os.cpu_count()


def test_time_calls_keeps_the_first_call_apart() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)

    s = time_calls(fn, repeats=4, warmup=2)
    assert len(calls) == 1 + 2 + 4 and s.n == 4
    assert s.min_s <= s.median_s <= s.max_s and s.std_s >= 0
    t = stats_of(3.0, [1.0, 2.0, 3.0])
    assert (t.first_s, t.mean_s, t.min_s, t.max_s, t.median_s) == (3.0, 2.0, 1.0, 3.0, 2.0)
    assert abs(t.std_s - (2 / 3) ** 0.5) < 1e-12
    assert (
        met(1.2, ">=", 1.0)
        and not met(0.9, ">=", 1.0)
        and met(5.0, "<=", 10.0)
        and met(None, "<=", 1) is None
    )


def test_bench_storage_subset_prints_every_key() -> None:
    """The tiny tier's storage section (a real clip's keypoints through the blazepose stage in process)."""
    report = _bench("--tier", "tiny", "--sections", "storage", timeout=300)
    _check_report(report, {"storage"})
    st = report["storage"]
    assert (
        st["bytes_parquet"] > 0
        and st["bytes_npz"] > 0
        and st["videos"] == report["tier_sizes"]["storage_cohort"]
    )


@pytest.mark.slow
def test_bench_quick_prints_every_key() -> None:
    report = _bench("--quick", timeout=1800)
    _check_report(report, {"pose", "fit", "storage", "orchestration"})
    assert report["pose"]["cases"]["pool"]["subject_coverage"] > 0.9  # timed on frames with a person
