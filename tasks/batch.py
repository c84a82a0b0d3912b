"""Batch work the CLI hands straight to Ray (no Prefect): the pose stage over a list of videos, and the pose-stage
accuracy suite on a fresh synthetic cohort. Progress goes to callbacks; rendering is the caller's."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mocapflow.settings import Settings
from tasks.pose_ray import PoseOutcome

VideoProgress = Callable[[str, int, int], None]


def run_pose_batch(
    settings: Settings,
    videos: list[str],
    on_progress: VideoProgress | None = None,
    on_outcome: Callable[[PoseOutcome], None] | None = None,
) -> tuple[list[PoseOutcome], float]:
    """Run the pose actor pool over ``videos`` (local Ray unless ``settings.ray_address``).

    Returns the outcomes (a PoseResult or PoseFailure per video, in finishing order) and the wall seconds of
    processing (actor start and model loading excluded).
    """
    from infra.ray_cluster import ensure_ray
    from mocapflow.pose.pipeline import PoseParams
    from tasks.pose_ray import PosePool

    ensure_ray(settings, prefect_api_url=os.environ.get("PREFECT_API_URL"))
    outcomes: list[PoseOutcome] = []
    with PosePool(settings) as pool:
        pool.info()  # returns once every actor has loaded its models: time the processing only
        t0 = time.perf_counter()
        for outcome in pool.map(videos, PoseParams.from_settings(settings), on_progress=on_progress):
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
        seconds = time.perf_counter() - t0
    return outcomes, seconds


class PoseSuiteError(RuntimeError):
    """The pose suite could not measure anything (a synthetic video failed, or keypoints cannot be compared)."""


def validate_pose_suite(
    base: Settings,
    videos: int = 3,
    seconds: float = 2.0,
    seed: int | None = None,
    on_progress: VideoProgress | None = None,
    on_outcome: Callable[[PoseOutcome], None] | None = None,
) -> dict[str, Any]:
    """Pose-stage accuracy of the markers model set on a fresh synthetic cohort of clean videos (JSON-ready).

    The markers set is built first if missing. ``seed`` None draws a fresh one.
    """
    import secrets
    import tempfile

    from infra.ray_cluster import ensure_ray
    from mocapflow.keypoints import KeypointsError
    from mocapflow.pose.pipeline import PoseResult
    from mocapflow.pose.validate import compare_with_truth, summarise
    from mocapflow.store import Store
    from mocapflow.synth import CohortSpec, generate_cohort, read_ground_truth
    from tasks.pose_ray import PoseFailure
    from tasks.runtime import resolve_model_set

    markers = resolve_model_set(base.model_copy(update={"model_set": "markers"}))
    seed = secrets.randbelow(2**31) if seed is None else seed
    # start Ray before the cohort imports JAX: forking a JAX-threaded process can deadlock
    ensure_ray(base, prefect_api_url=os.environ.get("PREFECT_API_URL"))
    with tempfile.TemporaryDirectory(prefix="mocapflow-validate-pose-") as tmp:
        root = Path(tmp)
        spec = CohortSpec(n_videos=videos, seed=seed, seconds=seconds, width=640, height=480)
        entries = generate_cohort(root / "cohort", spec)
        settings = base.model_copy(
            update={"model_set": str(markers.root), "storage_root": str(root / "store")}
        )
        outcomes, wall = run_pose_batch(settings, [str(e.video) for e in entries], on_progress, on_outcome)
        failures = [o for o in outcomes if isinstance(o, PoseFailure)]
        if failures:
            raise PoseSuiteError(f"the pose stage failed on synthetic videos: {[str(f) for f in failures]}")
        store = Store.from_settings(settings)
        truth = {str(e.video): e.gt for e in entries}
        try:
            errors = [
                compare_with_truth(store.read_table(o.key), read_ground_truth(truth[o.video]))
                for o in outcomes
                if isinstance(o, PoseResult)
            ]
        except (KeypointsError, ValueError) as e:
            raise PoseSuiteError(f"cannot compare the keypoints with the ground truth: {e}") from e
    return {
        "model_set": markers.manifest.name,
        "model_id": markers.id,
        "seed": seed,
        **summarise(errors, wall),
    }
