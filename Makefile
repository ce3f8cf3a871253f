# The README's two commands: `make demo` and `make test`. Both build .venv on first use.
VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gestalt-al demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/ranking.py
	$(VENV)/bin/python benchmarks/saliency.py
	$(VENV)/bin/python benchmarks/train.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
