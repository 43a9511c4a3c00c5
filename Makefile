# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision pinned to a pair whose wheels match each other; pyproject allows any
# torch>=2.3 / torchvision>=0.18 for other installs.
TORCH := torch==2.14.1 torchvision==0.29.1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: train test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,parity]'
	touch $@

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/synthetic_draw.py
	$(PY) benchmarks/explainers.py

clean:
	rm -rf outputs .pytest_cache
