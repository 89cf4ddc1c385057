# The README's two commands are `make demo` and `make test`; everything else here serves them.
# Both work from a fresh clone: they create .venv, install the project, and start the broker.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv lint typecheck unit test demo kafka-start kafka-stop kafka-status bench eval eval-fusion clean

help:
	@echo "make demo    create .venv, start the local Kafka broker, run the end-to-end demo, stop the broker"
	@echo "make test    create .venv, lint (ruff, import contracts), type-check, start the broker, run the whole pytest suite, stop it"
	@echo "make unit    the tests that need no broker"
	@echo "make bench   the benchmarks in bench/ (JSON on stdout)"
	@echo "make eval    detection quality on NAB and SKAB (bench/eval_detection.py --data DIR) beside River and PyOD (JSON)"
	@echo "make eval-fusion  cascade against the three fusions, and alert kinds, on a generated feed (JSON)"
	@echo "make kafka-start | kafka-stop | kafka-status"

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check streamer detectors calibration tests bench
	$(BIN)/ruff format --check streamer detectors calibration tests bench
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

# The broker is stopped however pytest ends; the suite's exit status is make's.
test: lint typecheck
	scripts/kafka.sh start
	status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; scripts/kafka.sh stop; exit $$status

demo: $(STAMP)
	scripts/kafka.sh start
	status=0; $(BIN)/tandem demo --config configs/sensor.toml || status=$$?; scripts/kafka.sh stop; exit $$status

bench: $(STAMP)
	scripts/kafka.sh start
	status=0; for b in bench/bench_*.py; do $(BIN)/python $$b || status=$$?; done; scripts/kafka.sh stop; exit $$status

# About 12 minutes on 2 cores; the peers (River, PyOD) come with the [eval] extra.
eval: $(STAMP)
	$(BIN)/python -m pip install --quiet --editable '.[dev,eval]'
	$(BIN)/python bench/eval_detection.py

eval-fusion: $(STAMP)
	$(BIN)/python bench/eval_fusion.py

kafka-start: $(STAMP)
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

kafka-status:
	scripts/kafka.sh status

clean:
	scripts/kafka.sh stop || true
	rm -rf $(VENV) .kafka .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache
