"""Typed flow parameters: pydantic models, so the Prefect UI renders a form for each deployment.

Every field has a default, shown in the form: the settings' built-in default (mocapflow/settings.py). A field you
do not give (a direct call ``RunOptions(storage_root=...)``, or ``{"options": {}}`` through the API) takes its value
from the settings read when the run starts (environment / .env); a field you give wins. Deployments built by
`mocapflow serve` / `prefect deploy` carry the deploy-time settings as their default parameters, so the form shows
what a run will use (flows/deployments.py).

The source is exactly one of: a list of videos, a manifest, or a storage prefix (with a glob). In the schema it is a
``oneOf`` of three objects; a dict with one of the keys ``videos``, ``manifest``, ``prefix`` (or ``kind``) picks its
variant, and a dict with none or several of them fails with one line saying what to give.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, model_validator

from mocapflow.settings import Settings, load_settings

_SOURCE_KEYS = ("videos", "manifest", "prefix")
SOURCE_RULE = (
    "give exactly one source: videos (a list of URIs), a manifest (CSV/Parquet) or a prefix (folder/s3://)"
)


class VideosSource(BaseModel):
    """Explicit video URIs or paths (file or s3://)."""

    model_config = ConfigDict(extra="forbid", title="Videos")

    kind: Literal["videos"] = "videos"
    videos: list[str] = Field(min_length=1, description="Video URIs or paths (file or s3://).")


class ManifestSource(BaseModel):
    """A manifest with one row per video."""

    model_config = ConfigDict(extra="forbid", title="Manifest")

    kind: Literal["manifest"] = "manifest"
    manifest: str = Field(
        description="CSV/Parquet manifest: a 'video' column, optional 'camera' JSON or fx/fy/cx/cy, subject_id.",
        min_length=1,
    )


class PrefixSource(BaseModel):
    """Every video under a storage prefix that matches a glob."""

    model_config = ConfigDict(extra="forbid", title="Prefix")

    kind: Literal["prefix"] = "prefix"
    prefix: str = Field(description="Folder or s3:// prefix to scan for videos.", min_length=1)
    glob: str = Field("**/*.mp4", description="Pattern under the prefix.")


def _given(value: dict[str, Any]) -> list[str]:
    return [k for k in _SOURCE_KEYS if value.get(k)]


def _source_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return getattr(value, "kind", None)
    if not isinstance(value, dict):
        return None
    if value.get("kind") in _SOURCE_KEYS:
        return value["kind"]
    given = _given(value)
    return given[0] if len(given) == 1 else None


SourceVariant = Annotated[
    Annotated[VideosSource, Tag("videos")]
    | Annotated[ManifestSource, Tag("manifest")]
    | Annotated[PrefixSource, Tag("prefix")],
    Discriminator(_source_kind, custom_error_type="source", custom_error_message=SOURCE_RULE),
]


class CohortSource(RootModel[SourceVariant]):
    """Which videos: a list of videos, a manifest, or a storage prefix (exactly one)."""

    # CohortSource(manifest="cohort.csv") and CohortSource.model_validate({"prefix": "s3://lab/in"}) pick the
    # variant from the key given (or from "kind").

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """``anyOf`` rather than pydantic's ``oneOf``: Prefect's form shows anyOf as a choice of tabs (oneOf as raw
        JSON). The variants exclude each other (each needs its own key, no extra keys), so the rule is the same."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if "oneOf" in target:
            target["anyOf"] = target.pop("oneOf")
        return schema

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, value: Any) -> Any:
        if (
            isinstance(value, dict)
            and value.get("kind") not in _SOURCE_KEYS
            and len(given := _given(value)) != 1
        ):
            raise ValueError(f"{SOURCE_RULE}; got {' and '.join(given) if given else 'none of them'}")
        return value

    @property
    def kind(self) -> str:
        return self.root.kind

    @property
    def videos(self) -> list[str]:
        return list(getattr(self.root, "videos", []))

    @property
    def manifest(self) -> str | None:
        return getattr(self.root, "manifest", None)

    @property
    def prefix(self) -> str | None:
        return getattr(self.root, "prefix", None)

    @property
    def glob(self) -> str:
        return getattr(self.root, "glob", "**/*.mp4")

    def label(self) -> str:
        """Short words for run names: 'cohort.csv', 's3://lab/in', '3 videos' or the one video's name."""
        if self.manifest:
            return self.manifest.rstrip("/").rsplit("/", 1)[-1]
        if self.prefix:
            return self.prefix
        if len(self.videos) == 1:
            return self.videos[0].rstrip("/").rsplit("/", 1)[-1]
        return f"{len(self.videos)} videos"


class _Inline:
    """JSON-schema marker: the annotated model's schema in place, not a ``$ref`` to it (Prefect's form shows an
    inline anyOf as tabs, a $ref to one as raw JSON)."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return dict(handler.resolve_ref_schema(handler(core_schema)))


Source = Annotated[CohortSource, _Inline()]
"""The flows' ``source`` parameter: a :class:`CohortSource`, inline in their parameter schema (tabs Videos | Manifest
| Prefix in the form, for `serve` and `prefect deploy` alike)."""


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def installed_model_sets(settings: Settings | None) -> list[str]:
    """Model-set names a run can take by name: folders with a manifest under ``modelsets_dir``, and the built-in
    sets (built on first use); without settings, the built-in sets."""
    from models.modelset import MANIFEST
    from tasks.runtime import BUILT_IN

    root = settings.modelsets_dir if settings is not None else None
    found = (
        {p.parent.name for p in root.glob(f"*/{MANIFEST}")} if root is not None and root.is_dir() else set()
    )
    return sorted(found | set(BUILT_IN))


_form = {"from_settings": False}  # see forms_from_settings


def forms_from_settings() -> None:
    """From now on a parameter schema made for a deployment reads the settings (flows/cohort.py calls this once its
    flows are defined: Prefect makes each flow's schema when the flow is defined, at import, where nothing may read
    the environment; those schemas keep the built-in defaults)."""
    _form["from_settings"] = True


def _run_options_form(schema: dict[str, Any]) -> None:
    """RunOptions' JSON schema as the Prefect form shows it: each field's default is the settings read now, and the
    model set is a choice of the installed sets or a free folder / s3:// prefix.

    Pydantic calls this whenever the schema is generated: by `prefect deploy` and by `serve` (``to_deployment``) for
    a deployment's parameter schema, so both give the same form with their deploy-time settings. Settings that do not
    validate leave the built-in defaults (the run itself reports them when it starts)."""
    from pydantic import ValidationError

    settings, defaults = Settings.model_construct(), {}  # the built-in defaults
    if _form["from_settings"]:
        try:
            settings = load_settings()
            defaults = RunOptions.from_settings(settings).model_dump(mode="json")
        except ValidationError:
            pass
    # at import: the built-in sets only (no look at the disk)
    choices = installed_model_sets(settings) if _form["from_settings"] else installed_model_sets(None)
    props = schema.get("properties", {})
    for name, value in defaults.items():
        props[name]["default"] = value
    if (prop := props.get("model_set")) is not None:
        prop.pop("type", None)
        prop["anyOf"] = [
            {"title": "Installed model set", "type": "string", "enum": choices},
            {"title": "Model-set folder or s3:// prefix", "type": "string"},
        ]


class RunOptions(BaseModel):
    """Model and fitting options of a run. A field not given comes from the settings read when the run starts."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_run_options_form)

    model_set: str = Field(
        _default("model_set"),
        description="An installed model set (markers, blazepose, metrabs, ...) or a model-set folder / s3:// prefix.",
    )
    batch_size: int = Field(_default("batch_size"), ge=1, description="Frames per decode/inference batch.")
    pose_cpus: int = Field(_default("pose_cpus"), ge=1, description="CPUs (threads) per pose actor.")
    fit_cpus: int = Field(_default("fit_cpus"), ge=1, description="CPUs per fitting task.")
    fit_max_iters: int = Field(
        _default("fit_max_iters"),
        ge=1,
        description="Most optimiser steps per fit (stops earlier once converged).",
    )
    fit_learning_rate: float = Field(
        _default("fit_learning_rate"), gt=0, description="Peak Adam learning rate."
    )
    fit_knots_per_second: float = Field(
        _default("fit_knots_per_second"), gt=0, description="Trajectory B-spline knots per second."
    )
    subject_track: Literal["longest", "largest", "central"] | Annotated[int, Field(ge=0)] = Field(
        _default("subject_track"),
        description="Which tracked person is the subject: longest, largest, central, or a track id.",
    )
    storage_root: str = Field(_default("storage_root"), description="Output folder or s3:// prefix.")
    ray_address: str | None = Field(
        _default("ray_address"),
        description="Ray cluster address ('auto', 'ray://host:10001'); empty = local Ray.",
    )

    def settings(self, **extra: Any) -> Settings:
        """The run's settings: environment / .env, overridden by the fields given here (not by unset defaults)."""
        return load_settings(**self.model_dump(exclude_unset=True), **extra)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunOptions:
        """Every field from ``settings`` (a deployment's default parameters: what a run with the form's values uses)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})
