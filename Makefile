# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Both set up .venv on first use; PYTHON picks the interpreter that creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

.PHONY: demo test lint setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/swav-train recipes/demo_digits.yaml run.output_dir=$(RUN)
	$(BIN)/python eval/knn.py $(RUN)/checkpoints/last.ckpt --baselines
	$(BIN)/python eval/linear.py $(RUN)/checkpoints/last.ckpt --baselines
	$(BIN)/python eval/prototypes.py $(RUN)/checkpoints/last.ckpt

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
