"""Quiet by default: TensorFlow's start-up lines of a pose worker and Ray's notices are kept out of a user's run,
and shown with `--verbose` (setting ``verbose``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.ray_cluster import quiet_ray_notices, quiet_worker_env
from mocapflow.settings import Settings
from tasks.pose_ray import startup_output_captured

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = Path.home() / ".cache" / "mocapflow" / "modelsets" / "blazepose" / "detector.tflite"


def test_startup_output_is_captured_and_logged_at_debug(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only pytest's capture handler on the root logger: a CLI test earlier in the session may have left a console
    # handler there, which would print the DEBUG record (and its captured text) to stderr
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])
    with caplog.at_level(logging.DEBUG, logger="tasks.pose_ray"), startup_output_captured(True):
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"UserWarning: tf.lite.Interpreter is deprecated\n")
    assert "oneDNN" not in capfd.readouterr().err
    (record,) = [r for r in caplog.records if "model start-up output" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "oneDNN custom operations" in record.getMessage() and "deprecated" in record.getMessage()

    with startup_output_captured(False):
        os.write(2, b"XNNPACK delegate\n")
    assert "XNNPACK delegate" in capfd.readouterr().err


def test_startup_output_of_a_failed_load_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="bad model"), startup_output_captured(True):
        os.write(2, b"E0000 op_kernel.cc] cannot parse the model file\n")
        raise RuntimeError("bad model")
    (record,) = [r for r in caplog.records if "model start-up output" in r.getMessage()]
    assert record.levelno == logging.ERROR and "cannot parse the model file" in record.getMessage()


@pytest.mark.slow  # a TensorFlow import in a fresh process (~10 s idle, ~70 s on a loaded 2-core machine)
@pytest.mark.skipif(not DETECTOR.is_file(), reason="the blazepose model set is not built here")
def test_tensorflow_lines_stay_out_of_a_quiet_worker() -> None:
    """A real TensorFlow import and TFLite interpreter (what a blazepose pose worker loads), in a fresh process."""
    script = textwrap.dedent(
        f"""
        import logging, sys
        import numpy as np
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
        from tasks.pose_ray import startup_output_captured
        with startup_output_captured(True):
            import tensorflow as tf
            it = tf.lite.Interpreter(model_path="{DETECTOR}", num_threads=1)
            it.allocate_tensors()
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            it.invoke()
        print("loaded", flush=True)
        """
    )
    env = {**os.environ, **quiet_worker_env(False)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded" in done.stdout
    for noise in ("absl::InitializeLog", "oneDNN", "XNNPACK", "deprecated"):
        assert noise not in done.stderr, done.stderr
    assert "XNNPACK" in done.stdout  # captured, then logged at DEBUG


def test_worker_env_follows_verbose() -> None:
    assert quiet_worker_env(False)["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert quiet_worker_env(True)["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert Settings().verbose is False


def test_ray_notices_off_unless_verbose(caplog: pytest.LogCaptureFixture) -> None:
    from ray._private.ray_logging import _warn_once

    token = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet_ray_notices(True)
    assert not token.filters
    quiet_ray_notices(False)
    quiet_ray_notices(False)  # idempotent
    assert len(token.filters) == 1
    with caplog.at_level(logging.WARNING):
        token.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out."
        )
        token.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("is enabled" in m for m in messages)
    assert any("is disabled" in m for m in messages)  # a security warning still shows
    assert _warn_once() == ""  # "Ray deduplicates logs by default ..." already counted as shown
