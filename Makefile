# Set-up on a fresh machine: `make demo` or `make test` (both create .venv if needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO ?= demo

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	# torch first: the CPU build on this machine's disk; a bare `torch` would pull CUDA.
	$(PIP) install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -q -e '.[dev,view]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import mineral3d, torch, zarr, tifffile, edt, cc3d, napari"
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# everything but the end-to-end tests marked slow (a quick check while editing)
test-fast: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow"

demo: install
	$(VENV)/bin/mineral3d phantom $(DEMO)/sample --fraction fine --seed 0 --force
	$(VENV)/bin/mineral3d info $(DEMO)/sample
	# register, train (~14 min on 2 cores), segment phases and particles, measure, validate, report
	$(VENV)/bin/mineral3d run $(DEMO)/sample --out $(DEMO)/run
	@echo "report: $(DEMO)/run/report.html"

clean:
	rm -rf $(DEMO) .pytest_cache
