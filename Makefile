# The README's two commands: `make demo` and `make test`. Both build .venv on first use.
VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard protos/gestalt_al/v1/*.proto)
# gRPC stubs are generated from protos/ here, never edited or committed.
STUBS  := $(PROTOS:protos/%.proto=%_pb2.py)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	touch $(STAMP)

$(STUBS): $(PROTOS) $(STAMP)
	$(VENV)/bin/python -m grpc_tools.protoc -I protos --python_out=. \
		--grpc_python_out=. $(PROTOS)

demo: $(STUBS)
	$(VENV)/bin/gestalt-al demo

lint: $(STUBS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest

bench: $(STUBS)
	$(VENV)/bin/python benchmarks/ranking.py
	$(VENV)/bin/python benchmarks/saliency.py
	$(VENV)/bin/python benchmarks/train.py
	# the 2-core-machine size; the README gives the GPU-machine command
	$(VENV)/bin/python benchmarks/service.py --num-samples 2000 --shard-size 500 \
		--cpus-per-replica 0.5 --saliency grad_cam --ranking-samples 1000000
	# resumes from benchmarks/results/al_curves/runs (delete it to rerun from scratch)
	$(VENV)/bin/python benchmarks/al_curves.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache gestalt_al/v1/*_pb2*
