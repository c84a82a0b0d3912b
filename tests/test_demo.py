"""The README's main command end to end (slow: ~3 min): `mocapflow demo` in a fresh process and folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_recovers_joint_angles_and_fails_the_corrupt_file_alone(tmp_path: Path):
    env = {
        **os.environ,
        "MOCAPFLOW_STORAGE_ROOT": str(tmp_path / "store"),
        "MOCAPFLOW_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "100",
    }
    env.pop("PREFECT_API_URL", None)  # the embedded defaults: Prefect's temporary local server
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("mocapflow")), "demo", "--out", str(tmp_path / "demo")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^(v\d{3}_\w+|c\d{3}_\w+)\s+\d?\s*(ok|failed)", proc.stdout, re.M)
    }
    errors = [
        float(x) for x in re.findall(r"^v\d{3}_\w+\s+\d\s+ok\s+150\s.*\s(\d+\.\d\d)\s*$", proc.stdout, re.M)
    ]
    assert sorted(rows.values()) == ["failed", "ok", "ok", "ok"], proc.stdout
    assert len(errors) == 3 and max(errors) <= 3.0, proc.stdout
    assert re.search(r"c000_\w+\.mp4 failed at probe: VideoError", proc.stdout), proc.stdout
    plots = sorted(p.name for p in (tmp_path / "demo" / "plots").iterdir())
    assert len([p for p in plots if p.endswith("_angles.png")]) == 3
    assert len([p for p in plots if p.endswith("_qc.gif")]) == 3
