"""Flows end to end on a tiny synthetic cohort, against real local services: Prefect's test server, a local Ray,
the markers model set, a local folder store and an S3 server on loopback (moto).

Covers: a cohort run with a corrupt video that fails alone; a rerun that does no pose or fit work; one video through
probe -> pose -> fit on an S3 store (a plot link a browser opens: presigned); a deployment served by `mocapflow serve`
and triggered through Prefect's API (as the UI does) on the cohort's store (slow: the same on a fresh S3 store); a
backfill interrupted halfway that resumes without redoing finished videos, then `only_failed`.

Time: the served deployment and the backfill start from the cohort test's committed outputs, so the default run does
pose and fit work for the cohort's 2 videos, the S3 test's 1 and the backfill's 1 new video.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from mocapflow.store import Store, params_hash
from mocapflow.synth import CohortSpec, generate_cohort

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[1]
FIT_ITERS = 300


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(
        out,
        CohortSpec(
            n_videos=2,
            seed=11,
            seconds=1.5,
            n_corrupt=1,
            motions=("squat", "arm_raise"),
        ),
    )
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cohort's store, shared: later tests find the cohort's outputs committed (no pose or fit work)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def env(markers_model_set, prefect_api: str) -> Iterator[dict[str, str]]:
    """Settings for every run of this module, as environment (read when each run starts)."""
    models_dir = markers_model_set.root.parent
    values = {
        "MOCAPFLOW_MODELS_DIR": str(models_dir),
        "MOCAPFLOW_FIT_MAX_ITERS": str(FIT_ITERS),
        "MOCAPFLOW_MODEL_SET": "markers",
        "PREFECT_API_URL": prefect_api,
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        yield values
    from infra.ray_cluster import shutdown_ray

    shutdown_ray()


def _corrupt_videos(cohort: Path) -> list[str]:
    import csv

    with open(cohort / "cohort.csv") as f:
        return [str(cohort / r["video"]) for r in csv.DictReader(f) if r["corrupt"]]


def _task_run_names(state) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return [t.name for t in client.read_task_runs(flow_run_filter=flow_run)]


def _summary(state):
    from flows.cohort import run_summary

    return run_summary(state)


def test_cohort_run_isolates_the_corrupt_video_and_a_rerun_does_no_work(cohort: Path, env, store_root: Path):
    from flows.cohort import process_cohort
    from flows.params import CohortSource, RunOptions

    source = CohortSource(manifest=str(cohort / "cohort.csv"))
    options = RunOptions(storage_root=str(store_root))
    state = process_cohort(source, options, return_state=True)

    assert state.is_failed()  # says that some videos failed ...
    summary = _summary(state)
    rows = {Path(r["video"]).name: r for r in summary["rows"]}
    corrupt = [Path(e).name for e in _corrupt_videos(cohort)]
    assert len(rows) == 3 and len(corrupt) == 1
    assert corrupt[0] in state.message and rows[corrupt[0]]["status"] == "failed"
    assert rows[corrupt[0]]["failed_stage"] == "probe" and "video" in rows[corrupt[0]]["error"]
    good = [r for n, r in rows.items() if n not in corrupt]
    assert all(r["status"] == "ok" and not r["cached"] for r in good)  # ... but the cohort finished
    assert summary["pose_calls"] == 2 and summary["fit_calls"] == 2
    for r in good:
        assert r["frames"] == 45 and r["residual_2d_px"] is not None and r["residual_2d_px"] < 20
        assert r["coverage"] == r["frames_detected"] / 45 and r["coverage"] >= 0.9
        assert Path(r["fit_uri"], "angles.parquet").is_file()  # the fit's commit folder
        assert (
            Path(r["mot_uri"]).is_file() and Path(r["plot_uri"]).is_file() and Path(r["osim_uri"]).is_file()
        )
        assert r["angles_uri"] == str(Path(r["fit_uri"], "angles.parquet")) and r["subject_id"] is not None

    # everything under the store reads as a dataset without project code; the run's summary is committed
    kp = pads.dataset(store_root / "keypoints", format="parquet", partitioning="hive")
    assert kp.count_rows() == 90
    store = Store(str(store_root))
    run = f"runs/{summary['run_id']}"
    assert store.exists(f"{run}/_COMMITTED") and store.read_table(f"{run}/summary.parquet").num_rows == 3

    before = {p: p.stat().st_mtime_ns for p in store_root.rglob("*") if p.is_file() and "runs" not in p.parts}
    again = process_cohort(source, options, return_state=True)
    summary2 = _summary(again)
    assert summary2["pose_calls"] == 0 and summary2["fit_calls"] == 0
    assert [r["cached"] for r in summary2["rows"] if r["status"] == "ok"] == [True, True]
    # a cached video's coverage comes from its committed table
    assert [r["coverage"] for r in summary2["rows"]] == [r["coverage"] for r in summary["rows"]]
    # and an unchanged video runs its probe task only (it finds both outputs committed): one task run per video
    assert [r["plot_uri"] for r in summary2["rows"]] == [r["plot_uri"] for r in summary["rows"]]
    assert sorted(_task_run_names(again)) == sorted(
        f"probe {Path(r['video']).name}" for r in summary2["rows"]
    )
    after = {p: p.stat().st_mtime_ns for p in store_root.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert after == before  # nothing rewritten


def test_a_video_with_the_subject_in_under_min_coverage_of_frames_is_flagged() -> None:
    from flows.cohort import coverage_status

    assert coverage_status("ok", 0.49, 0.5) == "low_coverage"
    assert coverage_status("ok", 0.5, 0.5) == "ok" and coverage_status("ok", None, 0.5) == "ok"
    assert coverage_status("failed", 0.1, 0.5) == "failed"
    assert coverage_status("ok", 0.0, 0.0) == "ok"


def _subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child that runs flows: its own Ray (never this process's cluster), same Prefect API."""
    from infra.ray_cluster import shutdown_ray

    shutdown_ray()  # a child that inherits RAY_ADDRESS would join, and on exit take down, this process's cluster
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **(extra or {})}


def _wait_for(cond, timeout: float, what: str, every: float = 1.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _backfill_manifest(cohort: Path, shared_store: Path, tmp_path: Path) -> tuple[str, Path]:
    """A manifest of [a cohort video, a new video, the corrupt file] and a store that already holds the cohort
    test's outputs (then the first video is done at once and the interruption lands in the second's work; run alone,
    the first is processed for real)."""
    import shutil

    store_root = tmp_path / "store"
    if shared_store.is_dir():
        shutil.copytree(shared_store, store_root, ignore=shutil.ignore_patterns("runs", "backfills"))
    # long enough that the interruption, sent as soon as the first video is in the ledger, lands in its work
    new = generate_cohort(tmp_path / "new", CohortSpec(n_videos=1, seed=23, seconds=4.0, motions=("squat",)))
    first = sorted(str(p) for p in cohort.glob("v*.mp4"))[0]
    rows = [first, str(tmp_path / "new" / new[0].video), *_corrupt_videos(cohort)]
    (tmp_path / "backfill.csv").write_text("video\n" + "\n".join(rows) + "\n")
    return str(tmp_path / "backfill.csv"), store_root


def test_backfill_resumes_after_interruption_and_reruns_only_failed(
    cohort: Path, env, store_root: Path, tmp_path: Path
):
    from flows.cohort import backfill
    from flows.params import CohortSource, RunOptions

    manifest, store_root = _backfill_manifest(cohort, store_root, tmp_path)
    store = Store(str(store_root))
    ledger = store_root / "backfills" / "resume" / "status"
    code = (
        # an operator's Ctrl-C reaches the backfill as in a terminal, whatever this test process's own SIGINT
        # disposition (an ignored SIGINT is inherited through exec, and Python then installs no handler: seen when
        # the whole suite ran, where the backfill ran to its end through the Ctrl-C)
        "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from flows.cohort import backfill\nfrom flows.params import CohortSource, RunOptions\n"
        f"backfill(CohortSource(manifest={manifest!r}), RunOptions(storage_root={str(store_root)!r}), "
        "name='resume', max_in_flight=1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_subprocess_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def one_done() -> bool:
            assert proc.poll() is None, f"backfill exited early: {proc.stderr.read()[-2000:]}"
            return any(json.loads(p.read_text())["status"] == "ok" for p in ledger.glob("*.json"))

        _wait_for(one_done, 600, "the first finished video in the backfill ledger", every=0.2)
        os.killpg(proc.pid, signal.SIGINT)  # an operator's Ctrl-C halfway through
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = {
        json.loads(p.read_text())["video"]
        for p in ledger.glob("*.json")
        if json.loads(p.read_text())["status"] == "ok"
    }
    assert 1 <= len(done_before) < 2

    state = backfill(
        CohortSource(manifest=manifest),
        RunOptions(storage_root=str(store_root)),
        name="resume",
        return_state=True,
    )
    summary = _summary(state)
    ok = [r for r in summary["rows"] if r["status"] == "ok"]
    assert len(ok) == 2
    # the finished video was not redone; the other's pose may have been committed before the Ctrl-C
    assert summary["pose_calls"] <= 1 and summary["fit_calls"] == 1
    assert {r["video"] for r in ok if r["cached"]} == done_before

    rerun = backfill(
        CohortSource(manifest=manifest),
        RunOptions(storage_root=str(store_root)),
        name="resume",
        only_failed=True,
        return_state=True,
    )
    rows = _summary(rerun)["rows"]
    assert len(rows) == 1 and rows[0]["video"] in _corrupt_videos(cohort) and rows[0]["status"] == "failed"
    status = store.get_json(f"backfills/resume/status/{params_hash({'uri': rows[0]['video']})}.json")
    assert status["status"] == "failed" and status["failed_stage"] == "probe"


# slow (37 s of flow runs): tests/test_pose_ray.py::test_a_second_run_reuses_the_live_pool_and_an_idle_pool_is_stopped
# is the fast test of the same reuse in the default suite
@pytest.mark.slow
def test_a_second_run_in_the_process_reuses_the_pose_actors(
    cohort: Path, env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served deployment runs many flows in one process: with pose_pool_idle_s > 0 the second run's pose stage
    runs on the actors the first left (same actor ids, models loaded once), writing to its own store."""
    from flows.cohort import process_video
    from flows.params import RunOptions
    from tasks.pose_pools import registry

    monkeypatch.setenv("MOCAPFLOW_POSE_POOL_IDLE_S", "300")  # read when each run starts

    video = str(sorted(cohort.glob("v*.mp4"))[0])
    summaries, actor_ids = [], []
    for store in ("first", "second"):  # two stores: the second run computes everything again
        state = process_video(
            video, RunOptions(storage_root=str(tmp_path / store), fit_max_iters=20), return_state=True
        )
        summaries.append(_summary(state))
        assert state.is_completed(), state.message
        (pool,) = registry().live()  # idle between runs (pose_pool_idle_s), not stopped
        actor_ids.append([a._actor_id.hex() for a in pool.actors])
    assert [s["pose_calls"] for s in summaries] == [1, 1]
    assert summaries[1]["pose_pool_reused"] is True and actor_ids[1] == actor_ids[0]
    assert summaries[1]["rows"][0]["keypoints_uri"].startswith(str(tmp_path / "second"))
    assert all(i["loads"] == 1 for i in pool.info())  # the models were not loaded again
    registry().shutdown_all()


def test_one_video_on_s3_with_a_plot_link_a_browser_opens(
    cohort: Path, env, s3_server, s3_bucket: str
) -> None:
    """The fast real S3 path: the video in object storage, every output there, the summary committed there, and the
    plot as a presigned URL that plain HTTP fetches."""
    import urllib.request

    from flows.cohort import process_video
    from flows.params import RunOptions
    from tasks.publish import plot_link

    root = f"s3://{s3_bucket}"
    store = Store(root, s3_server.storage_options())
    good = sorted(p for p in cohort.glob("v*.mp4"))[0]
    store.put_bytes(f"in/{good.name}", good.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.settings_overrides().items():
            mp.setenv(f"MOCAPFLOW_{k.upper()}", str(v))
        state = process_video(
            f"{root}/in/{good.name}", RunOptions(storage_root=f"{root}/out"), return_state=True
        )
    assert state.is_completed(), state.message
    (row,) = _summary(state)["rows"]
    assert row["status"] == "ok" and row["frames"] == 45
    assert row["keypoints_uri"].startswith(f"{root}/out/keypoints/") and row["fit_uri"].startswith(
        f"{root}/out/"
    )
    assert store.exists(f"out/runs/{_summary(state)['run_id']}/_COMMITTED")
    url = plot_link(Store(f"{root}/out", s3_server.storage_options()), row["plot_uri"])
    assert url is not None and url.startswith(s3_server.endpoint_url) and "Signature=" in url
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"


# the S3 variant does the cohort's work again through `serve` on a fresh store; it runs with `make test-slow`
@pytest.mark.parametrize("storage", ["local", pytest.param("s3", marks=pytest.mark.slow)])
def test_served_deployment_triggered_through_the_api(
    storage: str, cohort: Path, env, store_root: Path, request
):
    from prefect.deployments import run_deployment

    if storage == "s3":
        s3_server = request.getfixturevalue("s3_server")
        root = f"s3://{request.getfixturevalue('s3_bucket')}"
        store = Store(root, s3_server.storage_options())
        for p in cohort.iterdir():  # the cohort lives in object storage too
            store.put_bytes(f"cohort/{p.name}", p.read_bytes())
        manifest = f"{root}/cohort/cohort.csv"
        extra = {f"MOCAPFLOW_{k.upper()}": str(v) for k, v in s3_server.settings_overrides().items()}
        out = f"{root}/out"
    else:  # the cohort test's store: its outputs are committed, so this run checks the wiring, not the work again
        root, store, manifest, extra = str(store_root), Store(str(store_root)), str(cohort / "cohort.csv"), {}
        out = root
    serve_env = _subprocess_env({"MOCAPFLOW_STORAGE_ROOT": out, **extra})
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mocapflow")), "serve"],
        cwd=ROOT,
        env=serve_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from prefect.client.orchestration import get_client

        def deployed() -> bool:
            assert proc.poll() is None, f"serve exited: {proc.stderr.read()[-3000:]}"
            with get_client(sync_client=True) as client:
                names = {d.name for d in client.read_deployments()}
            return {"adhoc-cohort", "adhoc-video", "nightly-cohort", "backfill"} <= names

        _wait_for(deployed, 180, "mocapflow serve to register its deployments")
        run = run_deployment(
            "process-cohort/adhoc-cohort",
            parameters={"source": {"manifest": manifest}, "options": {}},
            timeout=600,
        )
        assert run.state is not None and run.state.is_failed(), run.state  # the corrupt file, and only it
        assert Path(_corrupt_videos(cohort)[0]).name in run.state.message
        assert run.state.message.startswith("1 of 3 videos failed")
        assert run.name.startswith("adhoc-cohort · cohort.csv · ")
        run_dir = f"{out.removeprefix(root).lstrip('/')}/runs/{run.id}".lstrip("/")
        assert store.exists(f"{run_dir}/_COMMITTED")
        summary = store.read_table(f"{run_dir}/summary.parquet").to_pylist()
        assert sorted(r["status"] for r in summary) == ["failed", "ok", "ok"]
        assert all(r["keypoints_uri"].startswith(f"{out}/keypoints/") for r in summary if r["status"] == "ok")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
