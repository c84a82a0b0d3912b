"""The one typed settings object of mocapflow.

Settings are read when a run starts (``Settings()`` or :func:`load_settings`), never at import time.
Every value can come from an environment variable ``MOCAPFLOW_<NAME>`` (e.g. ``MOCAPFLOW_STORAGE_ROOT``),
from a ``.env`` file in the working directory, or from keyword arguments / flow parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mocapflow"


class Settings(BaseSettings):
    """Everything a user may want to turn, with the embedded defaults.

    Embedded default: storage in a local folder, Ray started locally, Prefect on its temporary local server.
    """

    model_config = SettingsConfigDict(
        env_prefix="MOCAPFLOW_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # -- storage -----------------------------------------------------------------------------------------
    storage_root: str = Field(
        "./mocapflow-data",
        description="Where keypoints, fits and run manifests go: a local folder or an s3://bucket/prefix URI.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto on loopback); None means AWS S3."
    )
    s3_key: SecretStr | None = Field(None, description="S3 access key id (never logged).")
    s3_secret: SecretStr | None = Field(None, description="S3 secret access key (never logged).")
    s3_region: str = Field("us-west-2", description="S3 region.")

    # -- models ------------------------------------------------------------------------------------------
    model_set: str = Field(
        "markers",
        description="Model set: a built-in name (markers, blazepose, metrabs) or a folder / s3:// prefix "
        "holding a manifest.json.",
    )
    models_dir: Path | None = Field(
        None, description="Where built model sets live; default <cache_dir>/modelsets."
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Local cache: model sets fetched from object storage, JAX compilation cache.",
    )

    # -- compute -----------------------------------------------------------------------------------------
    ray_address: str | None = Field(
        None, description="Ray cluster address ('auto', 'ray://host:10001'); None starts Ray locally."
    )
    pose_cpus: int = Field(1, ge=1, description="CPUs each pose actor asks Ray for (= its ORT/TF threads).")
    pose_actors: int | None = Field(
        None,
        ge=1,
        description="Pose actors in the pool, placed anywhere; None: on each node (node CPUs - fit_cpus) // pose_cpus.",
    )
    fit_cpus: int = Field(1, ge=1, description="CPUs each fitting task asks Ray for (its pinned CPU set).")
    pose_pool_idle_s: float = Field(
        0.0,
        ge=0,
        description="In a process that serves many runs (`mocapflow serve`, a Prefect worker): keep the pose actors up "
        "this long after a run's pose work is done, models loaded, so that the next run with the same model set and "
        "actor settings reuses them (no actor start, no model load). Meanwhile they keep their CPUs (the run's own "
        "fits use them, fits_on_pose_actors); other runs' fits get only the CPUs the pool leaves (fit_cpus per "
        "node): worth it for frequent small runs. 0 (default): stopped once the run's pose work is done and no fit "
        "of the run uses them, every CPU then goes to the fits. `mocapflow run` (one run per process) always stops "
        "them then.",
    )
    fits_on_pose_actors: bool = Field(
        True,
        description="A run's fits also run on its pose actors while they have no video to do (videos come first; "
        "the fit code is the same, JAX sized to the actor's CPUs): with a bounded number of videos in flight the "
        "actors idle whenever the fits are behind. False: fits run only as Ray tasks on the CPUs the pool leaves.",
    )
    batch_size: int = Field(32, ge=1, description="Frames decoded and inferred per batch.")
    ort_spinning: bool = Field(
        False, description="Let ONNX Runtime worker threads spin between ops (faster, burns idle CPU)."
    )
    pin_cpus: bool = Field(True, description="Pin actors and fits to their CPU set where the node allows.")

    # -- pose --------------------------------------------------------------------------------------------
    default_fov_deg: float = Field(
        55.0, gt=1, lt=179, description="Horizontal FOV assumed when a video has no camera sidecar."
    )
    subject_track: Literal["longest", "largest", "central"] | Annotated[int, Field(ge=0)] = Field(
        "longest",
        description="Which tracked person is the subject (whose keypoints are fitted): 'longest' = detected in the "
        "most frames; 'largest' = largest mean box; 'central' = box centre nearest the image centre on average "
        "('largest'/'central' choose among people seen in at least half as many frames as the longest); or a track "
        "id (integer) from the video's tracks.parquet or the keypoints table's 'tracks' metadata. Every person's "
        "track is written to tracks.parquet either way, so another subject can be taken without the models.",
    )
    min_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A video whose subject is found in fewer than this fraction of its frames is reported with "
        "status 'low_coverage' (its outputs are still written).",
    )
    max_gap_frames: int = Field(15, ge=0, description="Tracking bridges gaps up to this many frames.")
    test_time_augmentation: int = Field(
        1,
        ge=1,
        description="Crops per detection (metrabs only; the authors use 5, their cohort pipeline 10): >= 2 gives each "
        "joint a confidence from its spread across rotated/zoomed/flipped crops; 1 caps confidence at 0.5.",
    )
    mirror_average: bool = Field(
        True,
        description="blazepose: run each landmark crop also flipped left-right and average the two (labels swapped "
        "back), so left and right come out alike and the landmarks jitter less; costs ~25 % of pose throughput on "
        "one core. False = MediaPipe's single crop.",
    )
    backtrack_frames: int = Field(
        10,
        ge=0,
        description="blazepose: a person the detector finds is tracked again backwards from the frame this many "
        "frames later: over their first frames (whose crop came from the detector and fits the landmark model "
        "worse than a tracked one) and over up to this many frames before, where they were there but not found. "
        "The pose stage holds 2 x this many decoded frames. 0 = MediaPipe's forward tracking only.",
    )
    max_people: int | None = Field(
        None,
        ge=1,
        description="blazepose: track at most this many people per video (the largest); None = everyone found. "
        "1 is the fastest (one landmark crop per frame) but may follow someone other than the subject you want.",
    )
    scan_interval_frames: int = Field(
        10,
        ge=1,
        description="blazepose: frames between detector scans for new people while people are tracked "
        "(a person who walks in is found at most this many frames late).",
    )
    max_scan_interval_frames: int = Field(
        30,
        ge=1,
        description="blazepose: each scan that finds nobody new doubles the frames to the next one, up to this "
        "many (a scan costs ~12 detector runs on 640x480: ~37 % of a single-person video's pose time at a scan "
        "every 10 frames). At or below scan_interval_frames, scans keep that fixed interval.",
    )
    max_frame_side: int | None = Field(
        1920,
        ge=64,
        description="Frames whose longer side is longer than this (px) are downscaled to it as they are decoded, "
        "before the models see them (keypoints and boxes are reported in the original frame's pixels, the models "
        "get the scaled intrinsics of the same camera): bounds a pose actor's memory on 4K video. None: never.",
    )
    min_video_s: float = Field(
        0.5, ge=0, description="Videos shorter than this (seconds) fail at probe: too short to fit a motion."
    )

    # -- fitting -----------------------------------------------------------------------------------------
    fit_max_iters: int = Field(
        1500,
        ge=1,
        description="Most optimiser steps per fit (it stops earlier once converged, see fit_rtol).",
    )
    fit_learning_rate: float = Field(3e-2, gt=0, description="Peak Adam learning rate.")
    fit_knots_per_second: float = Field(
        8.0,
        gt=0,
        description="B-spline knots per second of video; the joint trajectories keep motion up to half this rate "
        "in Hz (4 Hz at 8; mocapflow.fit.loss.trajectory_cutoff_hz).",
    )
    fit_world_frame: bool = Field(
        True,
        description="Express the pelvis (root) in an anatomical world frame estimated from the fitted body: floor "
        "at y = 0, Y against gravity, X the walking/facing direction (the camera pose goes into the angles metadata); "
        "False keeps the camera-relative frame the fit works in.",
    )
    fit_rtol: float = Field(
        1e-4,
        gt=0,
        description="A fit has converged when a block of optimiser steps lowers the loss by less than this "
        "fraction; it then stops (fit_max_iters is only the cap).",
    )
    fit_max_gap_s: float = Field(
        0.25,
        ge=0,
        description="Runs of unobserved frames up to this long (s) are bridged by the fit and marked "
        "interpolated; longer gaps are not fitted (NaN angles, left out of the .mot).",
    )
    fit_lowpass_hz: float = Field(
        0.0,
        ge=0,
        description="Zero-phase low-pass cut-off (Hz, -6 dB point) applied to the keypoints before a fit (after "
        "left/right swaps are undone); 0: none (the fitted trajectories keep motion up to fit_knots_per_second / 2).",
    )
    fit_observed_fraction: float = Field(
        0.3,
        ge=0,
        le=1,
        description="A frame counts as observed when at least this fraction of the keypoints the fit uses "
        "(and at least 4) have confidence > 0 and a finite 2D position.",
    )

    # -- orchestration -----------------------------------------------------------------------------------
    nightly_cron: str = Field("0 2 * * *", description="Cron of the nightly cohort deployment.")
    timezone: str = Field("UTC", description="Timezone of the nightly schedule (IANA name).")
    nightly_prefix: str | None = Field(
        None, description="Storage prefix (with glob) the nightly deployment scans for videos."
    )
    max_videos_in_flight: int = Field(8, ge=1, description="Backfill: videos submitted at once.")
    deployment_concurrency_limit: int = Field(
        1,
        ge=1,
        description="Runs of one deployment at a time (more wait in the queue): with a local Ray each run starts its "
        "own on the same CPUs; raise it when ray_address names a cluster the runs share.",
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        description="Concurrent runs of one cohort: a run computing a video's keypoints or fit holds a lease object "
        "in the store (leases/...) that lives this long unless renewed (the holder renews it every lease_s / 3); "
        "another run waits for the holder's result, and takes over a lease that expired (its run died). "
        "Keep it well above the clock skew between machines.",
    )
    lease_poll_s: float = Field(
        2.0, gt=0, description="How often a run waiting for another run's lease looks at the store again."
    )
    verbose: bool = Field(
        False,
        description="Show framework start-up output: TensorFlow/absl/oneDNN/XNNPACK lines of each pose worker and "
        "Ray's token and log-dedup notices (off: captured and logged at DEBUG). `mocapflow --verbose` sets it.",
    )

    @field_validator("storage_root")
    @classmethod
    def _strip_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/") if v not in ("/",) else v

    @property
    def modelsets_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.cache_dir / "modelsets"

    @property
    def jax_cache_dir(self) -> Path:
        return self.cache_dir / "jax"

    def storage_options(self) -> dict[str, Any]:
        """fsspec storage options for ``storage_root`` (credentials included; never log the result)."""
        if not self.storage_root.startswith("s3://"):
            return {}
        opts: dict[str, Any] = {"client_kwargs": {"region_name": self.s3_region}}
        if self.s3_endpoint_url:
            opts["endpoint_url"] = self.s3_endpoint_url
        if self.s3_key is not None and self.s3_secret is not None:
            opts["key"] = self.s3_key.get_secret_value()
            opts["secret"] = self.s3_secret.get_secret_value()
        return opts


def load_settings(**overrides: Any) -> Settings:
    """Read settings now (environment, .env, then explicit overrides win)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
