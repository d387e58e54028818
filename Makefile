# ragsite: `make run` sets up and serves on embedded defaults; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
# PORT: empty = the PORT setting (.env or the environment; 8000). `make run PORT=8765` overrides it.
PORT ?=

.PHONY: setup setup-dev run test lint migrate worker clean

# `make run` installs what the service needs; `make test` and `make lint` add the test tools.
$(VENV)/.installed: requirements.txt
	@echo "==> [1/3] Creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> [2/3] Installing the Python packages (first run: 2-6 min with a fast connection; PyTorch is the big one)"
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
		$(PY) -m pip install --progress-bar on --index-url "$(TORCH_INDEX_URL)" \
			"$$(grep '^torch==' requirements.txt)"; fi
	$(PY) -m pip install --progress-bar on -r requirements.txt
	@echo "==> [3/3] Exporting the packaged embedding model to ONNX (int8) into var/models (about a minute, once)"
	EMBEDDING_MODEL_DIR=$(CURDIR)/var/models $(PY) manage.py embedder_export
	touch $@
	@echo "==> Set up. Later runs skip all of this and start in seconds."

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	@echo "==> Installing the test tools (pytest, Playwright, ruff, ...)"
	$(PY) -m pip install --progress-bar on -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

migrate: setup
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py serve --host $(HOST) $(if $(PORT),--port $(PORT))

worker: setup
	$(PY) manage.py db_worker

test: setup-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
