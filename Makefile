# `make demo` and `make test` work on a fresh machine with Python 3.11 and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/vaekit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# pinned first: a CPU build of torch (an open range could pull a multi-GB CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/vaekit

.PHONY: setup demo test clean
setup: $(BIN)/vaekit

demo: setup
	$(BIN)/vaekit demo --out vaekit-demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) vaekit-demo
