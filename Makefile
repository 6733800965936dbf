# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch (pyproject keeps torch>=2.6 for users with GPUs).
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-fast lint install bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The main job: train the tiny Performer masked LM on the embedded corpus (~5 min on 2 cores; the same run as the Performer row of docs/results.md), then
# evaluate it on the held-out test split beside the empirical baseline. Re-running resumes/reuses it.
DEMO_ARGS ?= --preset tiny --seq-len 256 --batch-size 32 --micro-batch-size 32 --max-steps 1000 \
	--warmup-steps 50 --eval-every 200 --save-every 200
demo: install
	$(PY) -m protein_performer train --out runs/demo $(DEMO_ARGS) --resume
	$(PY) -m protein_performer evaluate --checkpoint runs/demo

# Everything (what CI runs): lint, then the whole suite.
test: lint
	$(PY) -m pytest

# The developer's loop: the suite without the end-to-end subprocess tests (marked slow).
test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PY) benchmarks/attention.py
	$(PY) benchmarks/lm_table.py
	$(PY) benchmarks/long_context.py
	$(PY) benchmarks/embed_scaling.py

clean:
	rm -rf $(VENV) runs .pytest_cache
