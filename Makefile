# Two entry points (see README):  make study  |  make test
# Both create the project's virtual environment first (.venv, Python >= 3.11, pinned deps).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CORES ?= all
CONFIG ?= config/config.yaml

.PHONY: setup study test lint docs calibrate clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	# geotessera alone (its pin in pyproject's real-data extra): the TESSERA fixture tests
	$(BIN)/pip install --disable-pip-version-check -q --no-deps \
		"$$(grep -o '"geotessera==[^"]*"' pyproject.toml | tr -d '"')"
	rm -f $(VENV)/.installed-*
	touch $@

# The whole study on the default config (synthetic AOI), then the HTML report. Another study:
# make study CONFIG="config/config.yaml config/beyond_paper.yaml" (its files are checked
# first: Snakemake's own message on a YAML error names neither the file nor the line).
study: $(STAMP)
	PYTHONPATH=workflow $(BIN)/python -m aefheight.config $(CONFIG)
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES) --configfile $(CONFIG)
	PATH="$(BIN):$$PATH" snakemake --report results/report.html --configfile $(CONFIG)

# The test suite (unit tests, real snakemake runs, the SLURM cluster test when it can run).
test: $(STAMP)
	PATH="$(BIN):$$PATH" bash tests/run.sh

lint: $(STAMP)
	PATH="$(BIN):$$PATH" ruff check workflow tests benchmarks
	PATH="$(BIN):$$PATH" ruff format --check workflow tests benchmarks
	PATH="$(BIN):$$PATH" snakefmt --check .
	PATH="$(BIN):$$PATH" snakemake --lint
	PATH="$(BIN):$$PATH" mypy

# config/README.md's key tables from the schema (a test fails when they are stale)
docs: $(STAMP)
	sed -i '/^<!-- generated from workflow\/schemas/q' config/README.md
	PYTHONPATH=workflow $(BIN)/python -m aefheight.config --key-tables >> config/README.md

# The synthetic AOI's calibration (the pixel-wise Ridge only, no net): solves the generator's
# knobs, prints the values to freeze in config/config.yaml and the schema, checks the targets.
calibrate: $(STAMP)
	PYTHONPATH=workflow $(BIN)/python -m aefheight.calibration --solve

clean-results:
	rm -rf results/*/ results/report.html .snakemake
