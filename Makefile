# Two commands matter: `make run` (the bridge on 127.0.0.1:8000) and `make test` (every test).
# Both create the virtualenv from requirements-dev.txt first, when it is missing or out of date.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: venv
	$(BIN)/chalice local --host 127.0.0.1 --port $(PORT) --no-autoreload

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .chalice/deployments
