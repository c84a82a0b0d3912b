"""A backfill on a real two-node Ray cluster (head + a worker node on loopback, token authentication), with S3
storage (moto on loopback) and a real `prefect server`; the worker node's raylet is killed mid-run.

Asserts: pose actors and fits ran on both nodes (Ray's own state API: node ids), the backfill still completes after
the node is lost, every video's outputs are committed exactly once (one keypoints table and one fit per video, no
stray objects), and the ledger says ok for every video. Run with `make test-cluster` (marker `cluster`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local_cluster import LocalRayCluster, WorkerNode
from infra.s3server import S3Server
from mocapflow.synth import CohortSpec, generate_cohort

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

N_VIDEOS = 6
FIT_ITERS = 300
FIT_TASK_NAMES = ("fit", "PoseWorker.fit")  # a fit task, or a fit on a pose actor between its videos


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the backfill exited ({proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(5.0)


def _state(cluster: LocalRayCluster, kind: str) -> list[dict]:
    return cluster.state(kind)


def _median(summary: dict, key: str) -> float:
    values = sorted(r[key] for r in summary["rows"] if r.get(key) is not None)
    return values[len(values) // 2] if values else float("nan")


@pytest.fixture
def two_nodes() -> Iterator[LocalRayCluster]:
    """Head (2 CPUs) + a worker node (2 CPUs, resource ``node2``); stopped whatever happens to the test (failure,
    Ctrl-C, pytest-timeout's signal): only this cluster's processes, and its temp folder with Ray's pointer to it."""
    # nodes may take minutes to join on a loaded 2-core host (180 s was not always enough)
    cluster = LocalRayCluster(
        head_cpus=2, workers=[WorkerNode(cpus=2, resources={"node2": 1})], timeout_s=360
    )
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_backfill_spreads_over_two_nodes_and_survives_losing_one(
    markers_model_set, tmp_path: Path, two_nodes: LocalRayCluster
) -> None:
    import s3fs

    from infra.prefect_server import PrefectServer

    t_test = time.monotonic()

    cohort = tmp_path / "cohort"
    generate_cohort(
        cohort, CohortSpec(n_videos=N_VIDEOS, seed=23, seconds=1.0, motions=("squat", "arm_raise"))
    )
    videos = sorted(cohort.glob("*.mp4"))
    assert len(videos) == N_VIDEOS

    with (
        S3Server() as s3,
        PrefectServer(home=tmp_path / "prefect") as prefect,
    ):
        cluster = two_nodes
        s3.make_bucket("lab")
        fs = s3fs.S3FileSystem(**s3.storage_options())
        for v in videos:
            fs.put(str(v), f"lab/in/{v.name}")
        nodes = cluster.nodes()
        assert len(nodes) == 2
        node2 = next(n["node_id"] for n in nodes if "node2" in n["resources"])
        head = next(n["node_id"] for n in nodes if n["node_id"] != node2)

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MOCAPFLOW_"))},
            **prefect.client_env(),
            **cluster.client_env(),
            "MOCAPFLOW_STORAGE_ROOT": "s3://lab/out",
            "MOCAPFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
            "MOCAPFLOW_S3_KEY": s3.storage_options()["key"],
            "MOCAPFLOW_S3_SECRET": s3.storage_options()["secret"],
            "MOCAPFLOW_MODELS_DIR": str(markers_model_set.root.parent),
            "MOCAPFLOW_MODEL_SET": "markers",
            "MOCAPFLOW_FIT_MAX_ITERS": str(FIT_ITERS),
        }
        code = (
            "import json\n"
            "from flows.cohort import backfill\nfrom flows.params import CohortSource\n"
            "state = backfill(CohortSource(prefix='s3://lab/in', glob='*.mp4'), name='cluster', "
            "max_in_flight=4, return_state=True)\n"
            "print('STATE', state.type.value, json.dumps(state.result(raise_on_failure=False), default=str))\n"
        )
        t0 = time.monotonic()
        t_setup = t0 - t_test
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ledger = "lab/out/backfills/cluster/status"

            def fits_on_node2() -> bool:
                return any(
                    t.get("name") in FIT_TASK_NAMES
                    and t.get("node_id") == node2
                    and t.get("state") == "FINISHED"
                    for t in _state(cluster, "tasks")
                )

            def pose_actors_on_both() -> bool:
                on = {
                    a.get("node_id") for a in _state(cluster, "actors") if a.get("class_name") == "PoseWorker"
                }
                return {head, node2} <= on

            _wait_for(pose_actors_on_both, 600, "pose actors on both nodes", proc)
            actors = [a for a in _state(cluster, "actors") if a.get("class_name") == "PoseWorker"]
            _wait_for(fits_on_node2, 900, "a finished fit on the second node", proc)
            done_before = len(fs.ls(ledger)) if fs.exists(ledger) else 0
            assert done_before < N_VIDEOS, (
                "the backfill finished before the node could be lost; use more videos"
            )
            cluster.kill_worker(0)
            t_kill = time.monotonic() - t0
            out, err = proc.communicate(timeout=1200)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err[-3000:]
        line = next(x for x in out.splitlines() if x.startswith("STATE "))
        state_type, summary = line.split(" ", 2)[1], json.loads(line.split(" ", 2)[2])
        assert state_type == "COMPLETED", summary

        # work ran on both nodes: pose actors and fits (Ray's state API: one row per actor, per task attempt)
        # fit tasks and fits on pose actors between their videos (tasks/runtime.FlowRuntime.run_fit)
        fits = [t for t in _state(cluster, "tasks") if t.get("name") in FIT_TASK_NAMES]
        fit_nodes = {t.get("node_id") for t in fits if t.get("state") == "FINISHED"}
        assert {head, node2} <= fit_nodes
        assert {head, node2} <= {a.get("node_id") for a in actors}
        all_actors = [a for a in _state(cluster, "actors") if a.get("class_name") == "PoseWorker"]

        # every video ok in the ledger, its outputs committed exactly once, nothing else written
        fs.invalidate_cache()
        statuses = [json.loads(fs.cat(p)) for p in fs.ls(ledger)]
        assert sorted(s["video"] for s in statuses) == sorted(f"s3://lab/in/{v.name}" for v in videos)
        assert all(s["status"] == "ok" for s in statuses), statuses
        kp = fs.glob("lab/out/keypoints/**/keypoints.parquet")
        kp_ok = fs.glob("lab/out/keypoints/**/_SUCCESS.json")
        angles = fs.glob("lab/out/fits/**/angles.parquet")
        fit_ok = fs.glob("lab/out/fits/**/_SUCCESS.json")
        assert len(kp) == len(kp_ok) == N_VIDEOS
        assert len(angles) == len(fit_ok) == N_VIDEOS
        assert len({p.split("/video=")[1].split("/")[0] for p in kp}) == N_VIDEOS
        assert len({p.split("/video=")[1].split("/")[0] for p in angles}) == N_VIDEOS

        # the summary: time, where the work ran, what was done again after the node was lost
        names = {head: "head", node2: "node2"}

        def per_node(rows: list[dict], state: str | None = None) -> dict[str, int]:
            return {
                names[n]: sum(
                    r.get("node_id") == n and (state is None or r.get("state") == state) for r in rows
                )
                for n in (head, node2)
            }

        lost = [
            ln.strip()[-240:]
            for ln in err.splitlines()
            if "pose actor" in ln or ("Retry" in ln and "will start" in ln)
        ]
        print(
            f"\ntwo-node backfill: cluster up in {cluster.start_seconds:.0f} s, cohort + S3 + Prefect server in "
            f"{t_setup:.0f} s, then {N_VIDEOS} videos in {time.monotonic() - t0:.0f} s; node2 lost at "
            f"{t_kill:.0f} s with {done_before} videos done; pose actors per node {per_node(all_actors)}; "
            f"fits finished per node {per_node(fits, 'FINISHED')}; fit attempts lost with node2 "
            f"{sum(t.get('node_id') == node2 and t.get('state') != 'FINISHED' for t in fits)}, "
            f"fits run again {sum((t.get('attempt_number') or 0) > 0 for t in fits)}; pose calls "
            f"{summary['pose_calls']} for {N_VIDEOS} videos ({summary['pose_calls'] - N_VIDEOS} retried), "
            f"fit calls {summary['fit_calls']}; per video: pose {_median(summary, 'pose_s'):.0f} s, fit "
            f"{_median(summary, 'fit_s'):.0f} s (median, wall); pool and retry log:\n  "
            + "\n  ".join(lost[:20])
        )
