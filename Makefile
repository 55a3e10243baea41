# The one entry point: `make run` serves the API, `make test` checks it.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

.PHONY: help venv run superuser test test-sqlite test-postgres lint format bench stack clean

help:
	@echo "make run    serve the API on http://$(HOST):$(PORT)/ (SQLite, local cache)"
	@echo "make superuser  create an admin login for http://$(HOST):$(PORT)/admin/"
	@echo "make test   run the test suite on SQLite, then on PostgreSQL"
	@echo "make lint   ruff (format check and lint) and mypy"
	@echo "make bench  throughput table: the API against a bare WSGI app"
	@echo "make stack  nginx + gunicorn as in production on http://127.0.0.1:8080/ (Ctrl-C stops)"

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

run: export DJANGO_DEBUG ?= true
run: venv
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# An admin login for `make run` (the same as `.venv/bin/python manage.py createsuperuser`).
superuser: venv
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py createsuperuser

test: test-sqlite test-postgres

test-sqlite: venv
	@echo "== tests on SQLite (the embedded default)"
	$(BIN)/python -m pytest

# The database-backed tests again, on the PostgreSQL production uses.
test-postgres: venv
	@echo "== database tests on PostgreSQL ($(TEST_DATABASE_URL))"
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest tests/api tests/integration

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# DATABASE_URL and REDIS_URL are used when set; see deploy/stack.py.
stack: venv
	$(BIN)/python deploy/stack.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache .hypothesis
