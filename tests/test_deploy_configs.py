"""Deployable configs, checked as far as this machine allows without a Docker engine or a Kubernetes cluster:
the files parse, what they copy and run exists, versions match the lock file, secrets come from the environment,
nothing runs as root, and the image's dependency step resolves from the lock file (uv dry run)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / "env.example"
ONPREM = ROOT / "infra" / "cluster" / "ray-onprem.yaml"
KUBERAY = ROOT / "infra" / "cluster" / "kuberay-raycluster.yaml"


def _locked_version(name: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (pkg,) = [p for p in lock["package"] if p["name"] == name]
    return pkg["version"]


def _cli_commands() -> set[str]:
    from typer.main import get_command

    from mocapflow.cli import app

    return set(get_command(app).commands)  # type: ignore[attr-defined]


def test_dockerfile_copies_what_exists_runs_unprivileged_and_pins_the_makefiles_uv() -> None:
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which the repository lacks"
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    uv_pin = re.search(r"uv==([\d.]+)", text)
    make_pin = re.search(r"UV_VERSION := ([\d.]+)", (ROOT / "Makefile").read_text())
    assert uv_pin and make_pin and uv_pin.group(1) == make_pin.group(1)
    assert "--frozen" in text and "--no-dev" in text
    assert 'CMD ["mocapflow", "serve"]' in text and "serve" in _cli_commands()


def test_compose_stack_has_every_service_and_takes_secrets_from_the_environment() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "prefect-server", "minio", "ray-head", "ray-worker", "serve"}
    assert services["prefect-server"]["image"].endswith(f":{_locked_version('prefect')}-python3.11")
    assert (
        "postgresql+asyncpg://"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    build = services["ray-head"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["ray-worker"]["command"].startswith("ray start --address ray-head:")
    assert services["serve"]["command"].split()[:2] == ["mocapflow", "serve"]
    env = services["serve"]["environment"]
    assert env["MOCAPFLOW_RAY_ADDRESS"].startswith("ray-head:")
    assert env["RAY_AUTH_MODE"] == "token"
    # no secret is written in the file: every credential is a ${VAR} the user provides
    for key in ("MOCAPFLOW_S3_KEY", "MOCAPFLOW_S3_SECRET", "RAY_AUTH_TOKEN"):
        assert env[key].startswith("${"), f"{key} must come from the environment"
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line}
    assert required and required <= example, f"docker/env.example lacks {sorted(required - example)}"


def test_ray_onprem_cluster_config_installs_from_the_lock_and_shares_one_token() -> None:
    cfg = yaml.safe_load(ONPREM.read_text())
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    assert any("make setup" in c for c in cfg["setup_commands"])
    assert re.search(r"^setup:", (ROOT / "Makefile").read_text(), flags=re.M)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all(
            "RAY_AUTH_MODE=token" in c and "RAY_AUTH_TOKEN=$RAY_AUTH_TOKEN" in c for c in start
        )


def test_kuberay_manifest_matches_the_locked_ray_and_reads_secrets() -> None:
    doc = yaml.safe_load(KUBERAY.read_text())
    assert doc["kind"] == "RayCluster" and doc["apiVersion"] == "ray.io/v1"
    assert doc["spec"]["rayVersion"] == _locked_version("ray")
    pods = [doc["spec"]["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in doc["spec"]["workerGroupSpecs"]
    ]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["image"].startswith("mocapflow:")
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        for key in ("RAY_AUTH_TOKEN", "MOCAPFLOW_S3_KEY", "MOCAPFLOW_S3_SECRET"):
            assert "secretKeyRef" in env[key]["valueFrom"], f"{key} must come from a Secret"


@pytest.mark.skipif(
    shutil.which("uv") is None and not (ROOT / ".tools/bin/uv").exists(), reason="uv not installed"
)
def test_image_dependency_step_resolves_from_the_lock_file(tmp_path: Path) -> None:
    """The Dockerfile's `uv sync --frozen --no-dev --no-install-project`, dry-run into an empty environment."""
    uv = str(ROOT / ".tools/bin/uv") if (ROOT / ".tools/bin/uv").exists() else "uv"
    proc = subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--no-install-project", "--dry-run", "--offline"],
        cwd=ROOT,
        env={
            "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "ray==" in out and "prefect==" in out
    assert "pytest==" not in out and "opensim==" not in out  # dev-only packages stay out of the image
