"""`mocapflow run` end to end in a fresh process (slow: Prefect's temporary server, a local Ray, pose and fits).

A manifest with subject ids and a corrupt file: the table has one line per video by name, the corrupt one failed
at probe in one line, every output is listed, the QC videos play, and fits/angles reads as one dataset that names
each video's source and subject.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import imageio_ffmpeg
import pyarrow.parquet as pq
import pytest

from mocapflow.synth import CohortSpec, generate_cohort


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_on_a_manifest_prints_lines_by_name_outputs_and_qc_videos(
    tmp_path: Path, markers_model_set
) -> None:
    cohort = tmp_path / "cohort"
    generate_cohort(
        cohort, CohortSpec(n_videos=2, seed=4, seconds=1.5, n_corrupt=1, motions=("squat", "walking"))
    )
    with open(cohort / "cohort.csv") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        r["subject_id"] = f"P{i:02d}"
    with open(cohort / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    store = tmp_path / "store"
    env = {
        **os.environ,
        "MOCAPFLOW_MODELS_DIR": str(markers_model_set.root.parent),
        "MOCAPFLOW_FIT_MAX_ITERS": "300",
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)  # the embedded defaults: Prefect's temporary local server
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("mocapflow")),
            "run",
            str(cohort / "manifest.csv"),
            "--model",
            "markers",
            "--out",
            str(store),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr[
        -3000:
    ]  # the corrupt file failed; the others' outputs are committed
    names = {Path(r["video"]).name: r["subject_id"] for r in rows}
    for name, subject in names.items():
        status = "failed" if name.startswith("c") else "ok"
        assert re.search(rf"^\s*{re.escape(name)}\s+{subject}\s+{status}", out, re.M), out
    assert re.search(r"^c\d{3}_\w+\.mp4: failed at probe: VideoError: [^\n]+$", out, re.M), out
    assert "Traceback" not in out
    good = [r for r in rows if not r["video"].startswith("c")]
    qc = re.findall(r"QC video\s+(\S+\.mp4)$", out, re.M)
    assert len(qc) == len(good) == 2
    for uri in qc:
        meta = imageio_ffmpeg.read_frames(uri).__next__()
        assert meta["codec"] == "h264" and "yuv420p" in meta["pix_fmt"]
        assert imageio_ffmpeg.count_frames_and_secs(uri)[0] == 45
    for label in (
        "keypoints",
        "joint angles",
        "residuals",
        "OpenSim motion",
        "OpenSim model",
        "OpenSim markers",
    ):
        assert len(re.findall(rf"^\s+{label}\s+/\S+$", out, re.M)) == 2, label
    # the tables people query: every video's angles in one dataset, by source and subject
    by_source = duckdb.sql(
        f"SELECT source, subject_id, count(*) FROM read_parquet('{store}/fits/angles/**/*.parquet') GROUP BY ALL"
    ).fetchall()
    assert sorted(by_source) == sorted((str(cohort / r["video"]), r["subject_id"], 45) for r in good)
    summary = pq.read_table(re.search(r"^run summary: (\S+)$", out, re.M).group(1)).to_pylist()
    assert {(Path(r["video"]).name, r["subject_id"]) for r in summary} == set(names.items())
    assert all(r["angles_uri"] and Path(r["angles_uri"]).exists() for r in summary if r["status"] == "ok")
