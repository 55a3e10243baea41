# The one entry point: `make run` serves the API, `make test` checks it.
# Both create .venv and install the locked requirements on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: help venv lock upgrade run superuser test test-sqlite test-postgres lint format bench stack clean

help:
	@echo "make run    serve the API on http://$(HOST):$(PORT)/ (SQLite, local cache)"
	@echo "make superuser  create an admin login for http://$(HOST):$(PORT)/admin/"
	@echo "make test   run the test suite on SQLite, then on PostgreSQL"
	@echo "make lint   the pre-commit hooks over every file: ruff, mypy, django-upgrade, hygiene"
	@echo "make upgrade  recompile the locks with the newest allowed versions (P=pkg for one)"
	@echo "make bench  throughput table: the API against a bare WSGI app"
	@echo "make stack  nginx + gunicorn as in production on http://127.0.0.1:8080/ (Ctrl-C stops)"

# requirements-dev.txt is the whole lock (runtime + tools, pip itself included), with hashes:
# pip refuses any package or file the lock does not name.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip check
	touch $@

venv: $(BIN)/.installed

# Recompile the locks from requirements.in / requirements-dev.in (after editing them):
# existing pins are kept where the ranges still allow them. The local pip
# configuration (find-links, extra indexes) is ignored, so pip's default index (PyPI)
# alone is read and its files' hashes are the ones any machine downloads.
PIP_COMPILE = env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= \
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

lock: venv
	$(PIP_COMPILE) $(UPGRADE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) $(UPGRADE) --output-file requirements-dev.txt requirements-dev.in

# Move every pin to the newest version its range allows (or only P=<package>), then
# `make test`. The dev lock is constrained by the runtime lock, so both stay in step.
upgrade: UPGRADE = $(if $(P),--upgrade-package $(P),--upgrade)
upgrade: lock

run: export DJANGO_DEBUG ?= true
run: venv
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# An admin login for `make run` (the same as `.venv/bin/python manage.py createsuperuser`).
superuser: venv
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py createsuperuser

# Branch coverage (pyproject's [tool.coverage]) is gathered over both passes and printed once.
test: test-sqlite test-postgres
	@echo "== branch coverage, both passes"
	$(BIN)/coverage report

test-sqlite: venv
	@echo "== tests on SQLite (the embedded default)"
	$(BIN)/python -m pytest --cov --cov-report=

# The tests that use the database (marked `database` by tests/conftest.py) again, on the
# PostgreSQL production uses; their coverage is added to the SQLite pass's.
test-postgres: venv
	@echo "== database tests on PostgreSQL ($(TEST_DATABASE_URL))"
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -m database --cov --cov-append --cov-report=

# The hooks of .pre-commit-config.yaml over every tracked file, with the tools in .venv:
# ruff format and lint, mypy, django-upgrade and the hygiene checks. Fixers rewrite what
# they can and the run fails so the change is seen (the diff is printed).
lint: venv
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# DATABASE_URL and REDIS_URL are used when set; options: `python -m deploy stack --help`.
stack: venv
	$(BIN)/python -m deploy stack $(STACK_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
