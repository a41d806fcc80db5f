# The two commands of the README:
#   make demo   set up a virtualenv, migrate, create the demo user, run daphne on HOST:PORT (127.0.0.1:8000)
#   make test   set up a virtualenv and run the whole test suite (ruff, import contracts, mypy, migrations check,
#               the documentation build, pytest)
#   make docs   build the documentation into docs/_build/html (warnings are errors, every internal reference checked)
# PYTHON picks the interpreter (python3.11 → Django 5.2, python3.12+ → Django 6.1).

PYTHON ?= python3
VENV ?= .venv
# Where make demo serves the site (a host other than 127.0.0.1, localhost or [::1] must also be in
# DJANGO_ALLOWED_HOSTS, comma-separated).
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin

.PHONY: demo test setup docs

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup --url http://$(HOST):$(PORT)
	$(BIN)/python -m mcp_gateway.daphne -b $(HOST) -p $(PORT) demo.asgi:application

docs: setup
	$(BIN)/python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html

test: setup docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m mypy
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest
