# seqtag: two commands for a new machine.
#   make serve   set up .venv and start the HTTP service with the shipped models
#   make test    set up .venv and run the whole test suite (what CI runs)
#   make quick   the unit tests only (about a minute): for the edit-test loop
#
# torch: with no NVIDIA GPU, TORCH_SPEC (default torch==2.13.0) is installed first;
# on machines whose pip does not find a CPU build locally, add
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu
# With a GPU (nvidia-smi works) the default CUDA build from PyPI is installed.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin

.PHONY: setup serve test quick bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; \
		$(BIN)/pip install -q torch; \
	else \
		echo "no GPU: installing $(TORCH_SPEC) (CPU)"; \
		$(BIN)/pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); \
	fi
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(BIN)/seqtag serve

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

quick: setup
	$(BIN)/python -m pytest -q tests/unit -m "not slow"

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
