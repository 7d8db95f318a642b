# Everyday verbs; each one delegates to scripts/dev.py, which needs only python3.
PYTHON ?= python3
DEV := $(PYTHON) scripts/dev.py

.PHONY: setup demo test lint worker bench

setup:  ## create .venv, install, migrate, seed the demo team
	$(DEV) setup

demo:  ## moto server, web, worker and beat on embedded defaults
	$(DEV) up

test:  ## the whole test suite; make test ARGS="tests/deployments -x"
	$(DEV) test $(ARGS)

lint:  ## ruff check and ruff format --check
	$(DEV) lint

worker:  ## one more Celery worker
	$(DEV) worker

bench:  ## every benchmark in bench/; make bench ARGS="fanout --repeat 3"
	$(DEV) bench $(ARGS)
