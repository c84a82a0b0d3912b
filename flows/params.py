"""Typed flow parameters: pydantic models, so the Prefect UI renders a form for each deployment.

A field left empty (None) takes its value from the settings read when the run starts (mocapflow/settings.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocapflow.settings import Settings, load_settings


class CohortSource(BaseModel):
    """Which videos: any mix of explicit URIs, a manifest, and a storage prefix with a glob."""

    model_config = ConfigDict(extra="forbid")

    videos: list[str] = Field(default_factory=list, description="Video URIs or paths (file or s3://).")
    manifest: str | None = Field(
        None,
        description="CSV/Parquet manifest: a 'video' column, optional 'camera' JSON or fx/fy/cx/cy, subject_id.",
    )
    prefix: str | None = Field(None, description="Folder or s3:// prefix to scan for videos.")
    glob: str = Field("**/*.mp4", description="Pattern under the prefix.")

    @model_validator(mode="after")
    def _some_source(self) -> CohortSource:
        if not (self.videos or self.manifest or self.prefix):
            raise ValueError("give videos, a manifest or a prefix")
        return self


class RunOptions(BaseModel):
    """Model and fitting options of a run; empty fields come from the settings."""

    model_config = ConfigDict(extra="forbid")

    model_set: str | None = Field(
        None, description="markers, blazepose, metrabs, or a model-set folder / s3:// prefix."
    )
    batch_size: int | None = Field(None, ge=1, description="Frames per decode/inference batch.")
    pose_cpus: int | None = Field(None, ge=1, description="CPUs (threads) per pose actor.")
    fit_cpus: int | None = Field(None, ge=1, description="CPUs per fitting task.")
    fit_max_iters: int | None = Field(None, ge=1, description="Maximum optimiser steps per fit.")
    fit_learning_rate: float | None = Field(None, gt=0, description="Peak Adam learning rate.")
    fit_knots_per_second: float | None = Field(
        None, gt=0, description="Trajectory B-spline knots per second."
    )
    subject_track: Literal["longest", "largest", "central"] | Annotated[int, Field(ge=0)] | None = Field(
        None, description="Which tracked person is the subject: longest, largest, central, or a track id."
    )
    storage_root: str | None = Field(None, description="Output folder or s3:// prefix.")
    ray_address: str | None = Field(None, description="Ray cluster address; empty = local Ray.")

    def settings(self, **extra: Any) -> Settings:
        """The run's settings: environment / .env, overridden by the non-empty fields here."""
        return load_settings(**self.model_dump(exclude_none=True), **extra)
