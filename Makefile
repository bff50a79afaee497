# The two set-up commands: `make demo` (the main job, end to end) and `make test` (the suite).
# Both create or reuse a local virtual environment in .venv and install what they need.
# Also: `make test-fast` (the engine's unit tests, under a minute) and `make lint` (ruff, as CI runs it).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHMN := $(VENV)/bin/shmn
STAMP := $(VENV)/.shmn-installed
DEMO_DIR ?= demo-output
# glibc otherwise maps and unmaps every large activation (25-44% of CPU time in the kernel, docs/DESIGN.md section 7).
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.PHONY: all install anatomy browser demo test test-fast lint clean check-py39

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exactly this torch: a CPU file is served for it; a looser spec pulls gigabytes of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[slicer,test]'
	touch $@

install: $(STAMP)

anatomy: $(STAMP)
	$(SHMN) fetch-anatomy

demo: anatomy
	$(PY) -m shmn.demo --out $(DEMO_DIR)

test: anatomy browser
	$(PY) -m pytest -q -n 2 --dist loadgroup Testing

# Headless Chromium for the report pages' browser test (Testing/reporting/test_browser.py); the engine
# itself never needs it. Debian's package, installed only when missing (sudo when not root).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }

# The engine's unit tests: no Slicer, no phantom cohort, no end-to-end job (see Testing/conftest.py).
# One process: two workers would each pay the imports again for a run this short.
test-fast: anatomy
	$(PY) -m pytest -q -p no:xdist -m "not slow" --ignore=Testing/SHMNSegmenter --ignore=Testing/SHMNTraining Testing

# Rules and line length in pyproject.toml ([tool.ruff]); ruff is pinned in the `test` extra.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# Slicer 5.6-5.8 run Python 3.9.10: a static check of the engine and the modules (vermin, annotations
# evaluated), then the torch-free engine code (Testing/compat) run by a real CPython 3.9 that has only
# pytest. That interpreter is python3.9 on PATH or pyenv's; without one the run is skipped, and says so.
PYTHON39 ?= $(shell for p in $$(command -v python3.9) $$HOME/.pyenv/versions/3.9.*/bin/python; do $$p -c "" 2>/dev/null && echo $$p && break; done)
VENV39 ?= .venv39
check-py39: $(STAMP)
	$(VENV)/bin/vermin -t=3.9- --eval-annotations --no-tips --violations shmn SHMNCore SHMNSegmenter SHMNTraining
	@if [ -z "$(PYTHON39)" ]; then \
	  echo "check-py39: SKIPPED the Python 3.9 run: no python3.9 on PATH nor in ~/.pyenv/versions (install one to run it)"; \
	else \
	  test -x $(VENV39)/bin/python || $(PYTHON39) -m venv $(VENV39); \
	  $(VENV39)/bin/python -m pip install -q pytest==8.3.5; \
	  echo "check-py39: Testing/compat on $$($(VENV39)/bin/python --version)"; \
	  PYTHONPATH=$(CURDIR) $(VENV39)/bin/python -m pytest -q -p no:cacheprovider -m "not needs_torch" Testing/compat; \
	fi
