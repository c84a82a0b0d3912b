"""How the CLI shows things: progress bars and result tables (rich). No work is done here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from flows.demo import DemoReport
    from mocapflow.report import VideoLine

console = Console(stderr=True)


def pose_progress(show: bool = True):  # noqa: ANN202 - (rich Progress, on_progress, on_outcome)
    """A rich progress bar per video, and the callbacks that move them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.pose_ray import PoseFailure

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        # Ray starts while the bars show: a local raylet launched with sys.stdout/stderr swapped for rich's proxies
        # timed out on start-up here, so the streams stay as they are
        redirect_stdout=False,
        redirect_stderr=False,
    )
    bars: dict[str, object] = {}

    def bar(video: str):  # noqa: ANN202
        if video not in bars:
            bars[video] = progress.add_task(Path(video).name, total=None)
        return bars[video]

    def on_progress(video: str, done: int, total: int) -> None:
        progress.update(bar(video), completed=done, total=total)

    def on_outcome(outcome) -> None:  # noqa: ANN001 - PoseOutcome
        if isinstance(outcome, PoseFailure):
            progress.update(bar(outcome.video), description=f"[red]{Path(outcome.video).name} failed")
        else:
            progress.update(bar(outcome.video), completed=outcome.frames, total=outcome.frames)

    return progress, on_progress, on_outcome


def render_run(lines: list[VideoLine], summary_uri: str | None, model_name: str, seconds: float) -> None:
    """One line per video (name, subject, status, coverage, observed fraction, convergence), one line per failed
    video (stage and error; below the table so that a narrow terminal never squeezes it), then every output's URI
    and the run summary."""

    def pct(x: float | None) -> str:
        return "" if x is None else f"{100 * x:.0f}"

    status_style = {
        "ok": "[green]ok[/]",
        "low_coverage": "[yellow]low coverage[/]",
        "failed": "[red]failed[/]",
    }
    table = Table(
        title=f"mocapflow run: {len(lines)} videos, model set {model_name}, table after {seconds:.0f} s",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    with_subject = any(v.subject_id for v in lines)
    for col, justify in (
        ("video", "left"),
        *((("subject", "left"),) if with_subject else ()),
        ("status", "left"),
        ("frames", "right"),
        ("found%", "right"),
        ("obs%", "right"),
        ("conv", "left"),
    ):
        widest = max((len(v.name) for v in lines), default=5) if col == "video" else None
        table.add_column(col, justify=justify, min_width=widest, overflow="fold")
    for v in lines:
        table.add_row(
            v.name,
            *((v.subject_id or "",) if with_subject else ()),
            status_style.get(v.status, v.status) + ("*" if v.cached else ""),
            "" if v.frames is None else str(v.frames),
            pct(v.coverage),
            pct(v.observed_fraction),
            {True: "yes", False: "[yellow]no[/]", None: ""}[v.converged],
        )
    out = Console()
    out.print(table)
    for v in lines:
        if v.failed_stage:
            out.print(
                f"[red]{v.name}[/]: failed at {v.failed_stage}: {v.error}", soft_wrap=True, highlight=False
            )
    out.print(
        "found%: frames where the subject was found; obs%: frames the fit observed (the others are NaN or bridged, "
        "never invented); conv: the fit converged (its last block changed the loss by less than fit_rtol); "
        "*: every output was already in the store (nothing recomputed)"
    )
    for v in lines:
        if v.outputs:
            out.print(f"[bold]{v.name}[/] ({v.source})", soft_wrap=True)
            for label, uri in v.outputs.items():
                out.print(f"  {label:<16} {uri}", soft_wrap=True, highlight=False)
    out.print(f"run summary: {summary_uri}", soft_wrap=True, highlight=False)


def render_demo(report: DemoReport, out: Path, total: float) -> None:
    """The demo's table per video, the failures in one line each, and where everything is."""
    table = Table(
        title=f"mocapflow demo: cohort run {report.run_state.lower()}",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )
    for col, justify in (
        ("video", "left"),
        ("people", "right"),
        ("status", "left"),
        ("frames", "right"),
        ("found %", "right"),
        ("probe s", "right"),
        ("pose s", "right"),
        ("fit s", "right"),
        ("err deg", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)

    def s(x: float | None) -> str:
        return "" if x is None else f"{x:.1f}"

    for v in report.videos:
        table.add_row(
            Path(v.name).stem,  # the motion is in the name
            "" if v.status == "failed" else ("2" if v.second_person else "1"),
            {"ok": "[green]ok[/]", "low_coverage": "[yellow]low coverage[/]"}.get(v.status, "[red]failed[/]"),
            "" if v.frames is None else str(v.frames),
            "" if v.coverage is None else f"{100 * v.coverage:.0f}",
            s(v.seconds.get("probe")),
            s(v.seconds.get("pose")),
            s(v.seconds.get("fit")),
            "" if v.mjae_deg is None else f"{v.mjae_deg:.2f}",
        )
    out_console = Console()
    out_console.print(table)
    out_console.print(
        "err deg: median |fit - truth| joint angle over hips, knees, ankles, shoulders and elbows; found %: frames "
        "where the subject was found (low coverage below the min_coverage setting)"
    )
    for v in report.videos:
        if v.status == "failed":
            out_console.print(f"[red]{v.name} failed at {v.failed_stage}[/]: {v.error}")
    out_console.print(
        f"[bold]done in {total:.0f} s[/] (synth {report.seconds['synth_s']:.0f} s, model set "
        f"{report.seconds['models_s']:.0f} s, flow {report.seconds['flow_s']:.0f} s, plots "
        f"{report.seconds['plots_s']:.0f} s)\n"
        f"- videos and ground truth: {report.cohort_dir}\n"
        f"- plots (joint angles vs truth) and QC GIFs: {out / 'plots'}\n"
        f"- outputs (Arrow/Parquet, .mot, PNG) in the store: {report.storage_root}\n"
        f"    python -c \"import pyarrow.dataset as ds; print(ds.dataset('{report.storage_root}/keypoints', "
        f"partitioning='hive').to_table().to_pandas().head())\"\n"
        f"    duckdb -c \"SELECT * FROM read_parquet('{report.storage_root}/runs/*/summary.parquet')\"\n"
        f"- run summary: {report.summary_uri}\n"
        "- Prefect UI: `prefect server start`, then rerun with PREFECT_API_URL=http://127.0.0.1:4200/api "
        "to watch runs and open the artifacts there"
    )
