# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test lint bench venv clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/activate setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,onnx]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m kreg demo

lint: venv
	$(PY) -m ruff check .

test: venv lint
	$(PY) -m pytest kreg tests

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) kreg-demo build *.egg-info
