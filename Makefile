# Quick start: `make demo` (install + main search on digits), `make test` (install + test suite).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

# torch is pinned to the CPU build only when no torch is installed, so a user's own torch is kept.
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -e ".[test,series]"

demo: install
	$(PYTHON) -m nasforge search

test: install
	MPLBACKEND=Agg ORT_DISABLE_TELEMETRY=1 $(PYTHON) -m pytest -n 2 --dist loadgroup tests

.PHONY: install demo test
