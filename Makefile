# Two entry points: `make demo` (end-to-end demo pipeline) and `make test` (test suite).
# Both create/refresh the virtual environment in $(VENV) first.
# TORCH_SPEC pins the CPU wheel on CPU machines; override on a CUDA box, e.g.
#   make test TORCH_SPEC="torch"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# nnunetv2 (dev extra) pulls torchvision through timm: pinned with torch on one pip line so
# that pip never swaps the torch build. Override with TORCH_SPEC on a CUDA box.
TORCHVISION_SPEC ?= torchvision==0.28.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medseg-installed

.PHONY: demo test lint venv clean gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,jpeg,distributed,nnunet]" "$(TORCH_SPEC)" "$(TORCHVISION_SPEC)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medseg demo

test: $(STAMP)
	$(PY) -m pytest -q

# GPU readiness check (benchmarks/gpu_check.py; docs/benchmarks.md): on a CUDA machine
# `make gpu-check TORCH_SPEC=torch`; anywhere `make gpu-check ARGS=--dry-run` (CPU, tiny).
# GPU_PY=python3 uses that interpreter (torch, MONAI, medseg's dependencies installed)
# instead of the virtual environment. Results: gpu_check.json in $$OUT or ./gpu_check_out.
GPU_PY ?=
ARGS ?=
gpu-check: $(if $(GPU_PY),,$(STAMP))
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(or $(GPU_PY),$(PY)) benchmarks/gpu_check.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check medseg tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
