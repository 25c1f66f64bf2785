#!/usr/bin/env bash
# The test command behind `make test` and .ci/run: lint, type check, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium renders the report in a test (Debian's package; CI runs as root).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the report rendering test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/tmp/aefheight-chromium-install.log 2>&1 ||
    echo "WARNING: chromium could not be installed; the report rendering test will be SKIPPED"
fi
ruff check workflow tests benchmarks   # style, imports, docstrings (Google) of the package
ruff format --check workflow tests benchmarks
snakefmt --check .
snakemake --lint
mypy                                   # the package's types (pyproject.toml [tool.mypy])
# two workers: one runs a study's jobs while the other runs unit tests (tests/conftest.py)
pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
