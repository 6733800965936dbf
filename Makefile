# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch (pyproject keeps torch>=2.4 for users with GPUs).
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m protein_performer bench attention --quick --out runs/demo/bench

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/attention.py

clean:
	rm -rf $(VENV) runs .pytest_cache
