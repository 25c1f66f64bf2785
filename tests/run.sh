#!/usr/bin/env bash
# The test command behind `make test` and .ci/run: lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check workflow tests
snakefmt --check .
snakemake --lint
pytest "$@"
