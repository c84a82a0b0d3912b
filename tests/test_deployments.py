"""Deployments as a lab meets them: schedules that fire on a real `prefect server start`, the nightly taken from the
settings (paused until a prefix is set), and every prefect.yaml entrypoint resolvable.

The scheduled-run test runs the server's own scheduler service (not Prefect's test harness, which has none): it is
the service that failed under SQLAlchemy 2.1 (`_insert_scheduled_flow_runs`), so only waiting for a scheduled run
catches a broken dependency set. A seconds-resolution cron ('every 5 s', croniter's sixth field) keeps it short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.prefect_server import PrefectServer
from mocapflow.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EVERY_10_S = "* * * * * */10"  # croniter's sixth field: seconds
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

TICK_FLOW = """
from prefect import flow
from prefect.schedules import Cron


@flow
def tick() -> int:
    return 42


if __name__ == "__main__":
    tick.serve(name="tick", schedule=Cron("{cron}", timezone="UTC"), limit=1)
"""


def _runs_of(server: PrefectServer, deployment_id: str) -> list[dict[str, Any]]:
    return server.api(
        "POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50}
    )


def _deployment(server: PrefectServer, flow: str, name: str) -> dict[str, Any] | None:
    try:
        return server.api("GET", f"/deployments/name/{flow}/{name}")
    except OSError:  # 404 until it is registered
        return None


def test_scheduler_service_inserts_runs_for_a_cron_deployment(tmp_path: Path) -> None:
    """The server's scheduler service, in process on a fresh SQLite database: a cron deployment with a timezone gets
    its next runs inserted (the step that failed under SQLAlchemy 2.1), auto-scheduled at the cron's times."""
    import asyncio
    import datetime
    import zoneinfo

    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME, temporary_settings

    async def scheduled_runs() -> list[Any]:
        from prefect.server import models, schemas
        from prefect.server.database import provide_database_interface
        from prefect.server.schemas.schedules import CronSchedule
        from prefect.server.services.scheduler import schedule_deployments

        db = provide_database_interface()
        await db.create_db()
        async with db.session_context(begin_transaction=True) as session:
            flow = await models.flows.create_flow(
                session=session, flow=schemas.core.Flow(name="process-cohort")
            )
            cron = CronSchedule(cron="0 2 * * *", timezone="Europe/Berlin")
            deployment = await models.deployments.create_deployment(
                session=session,
                deployment=schemas.core.Deployment(
                    name="nightly-cohort",
                    flow_id=flow.id,
                    schedules=[schemas.core.DeploymentSchedule(schedule=cron, active=True)],
                ),
            )
        await schedule_deployments()
        filt = schemas.filters.DeploymentFilter(id=schemas.filters.DeploymentFilterId(any_=[deployment.id]))
        async with db.session_context() as session:
            return list(await models.flow_runs.read_flow_runs(session=session, deployment_filter=filt))

    db_url = f"sqlite+aiosqlite:///{tmp_path}/prefect.db"
    with temporary_settings({PREFECT_HOME: str(tmp_path), PREFECT_API_DATABASE_CONNECTION_URL: db_url}):
        runs = asyncio.run(scheduled_runs())
    assert len(runs) >= 1
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    for run in runs:
        assert run.auto_scheduled and run.state_type.value == "SCHEDULED"
        local = run.expected_start_time.astimezone(berlin)
        assert (local.hour, local.minute) == (2, 0)
        assert run.expected_start_time > datetime.datetime.now(datetime.UTC)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_served_cron_deployment_creates_and_runs_scheduled_runs(tmp_path: Path) -> None:
    """On a real `prefect server start`: a served deployment on a cron schedule gets runs from the server's
    scheduler and the runner completes one; `prefect deploy --all` from prefect.yaml takes the nightly's cron,
    timezone and prefix from the settings, and the scheduler gives it runs with that prefix."""
    (tmp_path / "tick.py").write_text(textwrap.dedent(TICK_FLOW.format(cron=EVERY_10_S)))
    t0 = time.monotonic()
    server_env = {
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # default 60 s: the first pass would be the wait
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3",  # a few runs, not 100 runs of a 10-s cron
    }
    with PrefectServer(tmp_path / "prefect-home", env=server_env, timeout_s=400) as server:
        started = time.monotonic() - t0
        env = {**os.environ, **server.client_env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        deploy_env = {
            **env,
            "MOCAPFLOW_NIGHTLY_CRON": EVERY_10_S,
            "MOCAPFLOW_TIMEZONE": "Europe/Berlin",
            "MOCAPFLOW_NIGHTLY_PREFIX": "s3://lab/in",
        }
        for cmd in (
            ["work-pool", "create", "mocapflow", "--type", "process"],
            ["--no-prompt", "deploy", "--all"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "prefect", *cmd],
                cwd=ROOT,
                env=deploy_env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runner = subprocess.Popen(
            [sys.executable, "tick.py"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its flow-run children are stopped with it
        )
        try:
            deadline = time.monotonic() + 400
            tick_runs: list[dict[str, Any]] = []
            nightly = _deployment(server, "process-cohort", "nightly-cohort")
            assert nightly is not None
            nightly_runs: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                assert runner.poll() is None, "the runner exited"
                nightly_runs = _runs_of(server, nightly["id"])
                tick = _deployment(server, "tick", "tick")
                tick_runs = _runs_of(server, tick["id"]) if tick else []
                if nightly_runs and any(r["state_type"] in FINAL for r in tick_runs):
                    break
                time.sleep(2)
        finally:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=30)
        log = server.log_tail()
    print(
        f"scheduled-run test: server up in {started:.0f} s, {time.monotonic() - t0:.0f} s in all; "
        f"{len(tick_runs)} tick runs, {len(nightly_runs)} nightly runs"
    )
    assert "Can't evaluate bulk DML" not in log
    finished = [r for r in tick_runs if r["state_type"] in FINAL]
    assert finished, f"no scheduled tick run finished: {[r['state_type'] for r in tick_runs]}\n{log}"
    assert all(r["auto_scheduled"] for r in finished)  # made by the scheduler, not by hand
    assert {r["state_type"] for r in finished} == {"COMPLETED"}

    (schedule,) = nightly["schedules"]
    assert schedule["schedule"]["cron"] == EVERY_10_S and schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert schedule["active"] is True
    assert nightly["parameters"]["source"] == {"prefix": "s3://lab/in"}
    assert nightly["parameters"]["options"]["model_set"] == Settings().model_set
    assert nightly["global_concurrency_limit"]["limit"] == 1
    # serve's form (tabs, installed-set choice) from prefect deploy too
    form = nightly["parameter_openapi_schema"]
    assert [v["$ref"].rsplit("/", 1)[1] for v in form["properties"]["source"]["anyOf"]] == [
        "VideosSource",
        "ManifestSource",
        "PrefixSource",
    ]
    assert "markers" in form["definitions"]["RunOptions"]["properties"]["model_set"]["anyOf"][0]["enum"]
    assert nightly_runs, f"the nightly got no scheduled runs\n{log}"
    assert all(r["auto_scheduled"] and r["parameters"] == nightly["parameters"] for r in nightly_runs)


def test_nightly_from_settings_paused_until_a_prefix_is_set() -> None:
    from flows.deployments import build_deployments
    from flows.params import RunOptions

    idle = build_deployments(Settings(nightly_cron="30 3 * * 1-5", timezone="Europe/Zurich"))[0]
    assert idle.paused is True
    assert idle.parameters == {"options": RunOptions().model_dump(mode="json")}  # the form shows the settings
    (schedule,) = idle.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 3 * * 1-5", "Europe/Zurich")

    live = build_deployments(Settings(nightly_prefix="s3://lab/in"))[0]
    assert live.paused is False
    assert live.parameters["source"] == {"prefix": "s3://lab/in"}
    assert live.schedules[0].schedule.cron == Settings().nightly_cron
    limited = build_deployments(Settings(deployment_concurrency_limit=3, fit_max_iters=99))
    assert {d.concurrency_limit for d in limited} == {3}
    assert {d.parameters["options"]["fit_max_iters"] for d in limited} == {99}


def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_passes_prefect_deploys_validation() -> None:
    """`prefect deploy` validates prefect.yaml before any step runs and skips every deployment if it fails (a
    templated concurrency_limit did)."""
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    assert len(model.deployments) == 4


def test_every_prefect_yaml_entrypoint_resolves() -> None:
    """Each deployment's entrypoint loads as a flow with Prefect's own loader, from the project root."""
    from prefect.flows import load_flow_from_entrypoint

    deployments = _prefect_yaml()["deployments"]
    assert {d["name"] for d in deployments} == {"nightly-cohort", "adhoc-video", "adhoc-cohort", "backfill"}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for d in deployments:
            flow = load_flow_from_entrypoint(d["entrypoint"])
            assert flow.fn.__name__ == d["entrypoint"].rsplit(":", 1)[1]
    finally:
        os.chdir(cwd)


def test_prefect_yaml_nightly_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """prefect.yaml's nightly takes cron, timezone, prefix and active from the build step that reads the settings,
    pulls nothing undocumented, and the step gives what `mocapflow serve` uses."""
    from flows.deployments import nightly_spec, nightly_step

    spec = _prefect_yaml()
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly-cohort"]
    assert spec["build"] == [{"flows.deployments.nightly_step": {"id": "mocapflow"}}]
    assert nightly["schedules"] == [
        {
            "cron": "{{ mocapflow.cron }}",
            "timezone": "{{ mocapflow.timezone }}",
            "active": "{{ mocapflow.active }}",
        }
    ]
    assert nightly["parameters"] == {"source": "{{ mocapflow.source }}", "options": "{{ mocapflow.options }}"}
    for d in spec["deployments"]:  # the form's options come from the settings
        assert d["parameters"]["options"] == "{{ mocapflow.options }}"
        assert d["concurrency_limit"] == Settings().deployment_concurrency_limit  # a number: see prefect.yaml
    assert spec["pull"] == [{"flows.deployments.enter_project": {}}]
    assert "MOCAPFLOW_HOME" not in (ROOT / "prefect.yaml").read_text()

    for name in ("MOCAPFLOW_NIGHTLY_CRON", "MOCAPFLOW_TIMEZONE", "MOCAPFLOW_NIGHTLY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT.parent)  # no .env
    idle = nightly_step()
    assert (idle["cron"], idle["timezone"], idle["active"], idle["prefix"]) == (
        "0 2 * * *",
        "UTC",
        False,
        None,
    )
    assert (
        "source" not in idle
    )  # the placeholder stays unset: no source parameter (None would fail the schema)
    monkeypatch.setenv("MOCAPFLOW_NIGHTLY_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("MOCAPFLOW_TIMEZONE", "Europe/Zurich")
    monkeypatch.setenv("MOCAPFLOW_NIGHTLY_PREFIX", "s3://lab/in")
    live = nightly_step()
    assert (live["cron"], live["timezone"], live["active"], live["prefix"]) == (
        "30 3 * * 1-5",
        "Europe/Zurich",
        True,
        "s3://lab/in",
    )
    assert live["source"] == {"prefix": "s3://lab/in"}
    assert live == nightly_spec(Settings())


def test_enter_project_makes_entrypoints_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.deployments import enter_project

    monkeypatch.chdir(tmp_path)
    out = enter_project()
    assert Path(out["directory"]) == Path(os.getcwd())
    for d in _prefect_yaml()["deployments"]:
        assert Path(d["entrypoint"].split(":")[0]).is_file()


def test_prefect_deploy_and_serve_give_the_same_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parameter schema `prefect deploy` stores (Prefect's ``parameter_schema`` of the entrypoint's flow, made
    after loading it) equals `serve`'s for every prefect.yaml deployment: the settings read at deploy time as the
    options' defaults, the model set a choice of the installed sets (one installed only in this test's
    ``modelsets_dir``) or a free path, and the source inline as tabs Videos | Manifest | Prefix."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    from flows.deployments import build_deployments
    from mocapflow.settings import load_settings
    from models.modelset import MANIFEST

    (tmp_path / "lab-set").mkdir()
    (tmp_path / "lab-set" / MANIFEST).write_text("{}")
    monkeypatch.setenv("MOCAPFLOW_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("MOCAPFLOW_MODEL_SET", "lab-set")
    monkeypatch.setenv("MOCAPFLOW_FIT_MAX_ITERS", "77")
    monkeypatch.chdir(ROOT)
    served = {
        d.name: d._parameter_openapi_schema.model_dump_for_openapi()
        for d in build_deployments(load_settings())
    }
    for d in _prefect_yaml()["deployments"]:
        deployed = parameter_schema(load_flow_from_entrypoint(d["entrypoint"])).model_dump_for_openapi()
        assert deployed == served[d["name"]], d["name"]
        options = deployed["definitions"]["RunOptions"]["properties"]
        assert options["fit_max_iters"]["default"] == 77 and options["model_set"]["default"] == "lab-set"
        installed, free = options["model_set"]["anyOf"]
        assert installed["enum"] == ["blazepose", "lab-set", "markers"]
        assert free == {"title": "Model-set folder or s3:// prefix", "type": "string"}
        if "source" in deployed["properties"]:
            source = deployed["properties"]["source"]
            assert "$ref" not in source
            assert [v["$ref"].rsplit("/", 1)[1] for v in source["anyOf"]] == [
                "VideosSource",
                "ManifestSource",
                "PrefixSource",
            ]

    monkeypatch.setenv("MOCAPFLOW_FIT_MAX_ITERS", "not a number")  # an invalid setting: the built-in defaults
    schema = parameter_schema(
        load_flow_from_entrypoint("flows/cohort.py:process_video")
    ).model_dump_for_openapi()
    assert (
        schema["definitions"]["RunOptions"]["properties"]["fit_max_iters"]["default"]
        == Settings.model_fields["fit_max_iters"].default
    )


def test_importing_the_flows_reads_no_settings() -> None:
    """Prefect makes each flow's parameter schema when the flow is defined (at import); that schema keeps the built-in
    defaults and choices, with settings in the environment that would change them (and one that does not even
    validate): nothing reads the environment at import. A schema made after the import shows the settings."""
    code = textwrap.dedent(
        """
        import json
        from prefect.utilities.callables import parameter_schema
        from flows.cohort import process_cohort
        at_import = process_cohort.parameters.model_dump_for_openapi()["definitions"]["RunOptions"]["properties"]
        after = parameter_schema(process_cohort).model_dump_for_openapi()["definitions"]["RunOptions"]["properties"]
        print(json.dumps([at_import["fit_max_iters"]["default"], at_import["model_set"]["anyOf"][0]["enum"],
                          after["fit_max_iters"]["default"]]))
        """
    )
    env = {**os.environ, "MOCAPFLOW_FIT_MAX_ITERS": "77", "MOCAPFLOW_MODELS_DIR": "/nonexistent/models"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    import json

    at_import_iters, at_import_sets, after_iters = json.loads(out.stdout.strip().splitlines()[-1])
    assert at_import_iters == Settings.model_fields["fit_max_iters"].default
    assert at_import_sets == ["blazepose", "markers"]
    assert after_iters == 77
