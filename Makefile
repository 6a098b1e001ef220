# mediavec: `make demo` sets everything up and runs the pipeline on bundled sample photos;
# `make test` runs what CI runs. No Docker needed (see devstack/).
SHELL := /bin/bash
BIN := .venv/bin

.PHONY: setup browser demo test testmedia lint format up down status validate-deploy

setup:
	scripts/setup.sh

demo: setup
	$(BIN)/mediavec demo

# Debian's chromium, for the search page's browser tests (the demo does not need it).
browser:
	scripts/setup.sh --browser

test: setup testmedia browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Real footage for the video tests (Debian's opencv-doc vtest.avi), fetched once into .mediavec/testmedia.
testmedia: setup
	$(BIN)/python -c "from pathlib import Path; from devstack.testmedia import vtest_avi; vtest_avi(Path('.mediavec/testmedia'))"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

up: setup
	$(BIN)/mediavec dev up

down:
	$(BIN)/mediavec dev down

status:
	$(BIN)/mediavec dev status

validate-deploy:
	scripts/validate-deploy.sh
