"""The ``mocapflow`` command line.

Each command reads :class:`mocapflow.settings.Settings` when it runs; heavy imports happen inside commands so that
``mocapflow --help`` stays fast.
"""

from __future__ import annotations

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

console = Console(stderr=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    configure_cli_logging(verbose)


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
) -> None:
    """Write a synthetic cohort of marker videos with ground truth (Parquet) beside each."""
    from rich.progress import Progress

    from mocapflow.synth import CohortSpec, generate_cohort

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
