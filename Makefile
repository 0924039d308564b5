# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-quick test-keras-spec test-tensorflow test-jax test-torch lint docs docs-build bench venv clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# TensorFlow: the CPU build (smaller, faster to install) where it exists.
# It is installed by name here, not through kreg's `tensorflow` extra: that
# extra names the `tensorflow` distribution, which pip counts as another
# project than `tensorflow-cpu` and would install on top of it (both write
# the same `tensorflow` package). The extras installed below (demo, test,
# onnx) name no TensorFlow distribution. Override with
# `make TENSORFLOW=tensorflow ...` for the GPU-capable build.
ifneq ($(filter x86_64 AMD64,$(shell uname -m)),)
TENSORFLOW ?= tensorflow-cpu>=2.21,<2.22
else
TENSORFLOW ?= tensorflow>=2.21,<2.22
endif

# `make demo` installs only what the demo needs (kreg, TensorFlow, the demo
# extra); `make test` (and lint, docs, bench) adds the test, onnx and docs extras.
$(VENV)/.demo-installed: $(VENV)/bin/activate setup.cfg pyproject.toml
	$(PY) -m pip install --quiet "$(TENSORFLOW)" -e ".[demo]"
	touch $@

# keras-hub (the tests sample a BertBackbone built from a config) is installed
# without its dependencies: it requires tensorflow-text, which requires the
# `tensorflow` distribution and would install it on top of tensorflow-cpu
# (another project to pip, the same `tensorflow` package). Its other
# dependencies are in the test extra; keras-hub imports without
# tensorflow-text (only its text tokenizers need it). Users who want
# keras-hub next to tensorflow-cpu can do the same:
#   pip install --no-deps "keras-hub>=0.32,<0.33" && pip install regex tokenizers sentencepiece
KERAS_HUB ?= keras-hub>=0.32,<0.33
$(VENV)/.installed: $(VENV)/.demo-installed
	$(PY) -m pip install --quiet "$(TENSORFLOW)" -e ".[demo,test,onnx,docs]"
	$(PY) -m pip install --quiet --no-deps "$(KERAS_HUB)"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.demo-installed
	$(PY) -m kreg demo

lint: venv
	$(PY) -m ruff check .

# `make test`: lint, Keras's own tests with kreg's classes, then the whole
# suite (tests/ and every docstring example in kreg/) on TensorFlow, the
# default backend, and again on JAX and on PyTorch. Tests that need
# TensorFlow itself, or that run once on purpose (notebooks, the demo, the
# README), are marked `tf_only` and skip on the other backends with their
# reason (tests/conftest.py); there is no hand-kept list of files here.
test: venv lint docs-build test-keras-spec test-tensorflow test-jax test-torch

# The edit loop: TensorFlow only, unit tests only. Leaves out the tests that
# run whole programs or fresh processes (marker `slow`, set in
# tests/conftest.py: notebooks, demo, examples, README and docs blocks, the
# command line, fresh interpreters) and the outcomes of training (`claim`).
test-quick: venv
	KERAS_BACKEND=tensorflow $(PY) -m pytest $(XDIST) -q -m "not slow and not claim" kreg tests

# The documentation site (docs/, mkdocs.yml): `make docs` serves it at
# http://127.0.0.1:8000; `make docs-build` (part of `make test`) builds it
# with every warning an error.
export NO_MKDOCS_2_WARNING := 1
docs: venv
	$(PY) -m mkdocs serve

docs-build: venv
	$(PY) -m mkdocs build --strict --quiet

# Keras's own unit tests for Dropout, the L1/L2/L1L2 regularizers and
# EarlyStopping, run with kreg's classes in their place. The runner downloads
# the source distribution of the installed Keras (pip download, cached in
# ~/.cache/kreg/keras-upstream; nothing of Keras's is committed) and copies the
# three test files into the ignored tests/keras_upstream/_upstream/. Only the
# text of error messages may differ; see tests/keras_upstream/conftest.py.
test-keras-spec: venv
	KERAS_BACKEND=tensorflow $(PY) tests/keras_upstream/run.py

# Two pytest-xdist workers (the two cores of the reference machine; override
# with `make test XDIST=` for one process). `loadscope` keeps each test
# module on one worker, so a module's shared fixtures (trained models,
# exported SavedModels) are built once.
XDIST ?= -n 2 --dist loadscope
# Each pass ends with its 15 slowest tests (setup included), so that every
# CI log says where the time went.
TIMES ?= --durations=15

test-tensorflow: venv
	KERAS_BACKEND=tensorflow $(PY) -m pytest $(XDIST) $(TIMES) kreg tests

# The JAX pass runs with TensorFlow made impossible to import
# (KREG_TEST_WITHOUT, tests/conftest.py): kreg and its tests need only Keras,
# NumPy and JAX. (Not the PyTorch pass: torch._dynamo probes for TensorFlow
# with importlib.util.find_spec, which the blocker cannot answer "absent".)
#
# JAX_DISABLE_MOST_OPTIMIZATIONS=1 (a documented JAX option) turns XLA's
# optimizing passes off for this pass: the tests' small programs are
# compile-bound on JAX (every eager op compiles per shape), and compiling them
# takes about half the time. What the code computes is the same; `make bench`
# and benchmarks/device_mc.sh run JAX with the optimizations on.
test-jax: venv
	KERAS_BACKEND=jax KREG_TEST_WITHOUT=tensorflow JAX_DISABLE_MOST_OPTIMIZATIONS=1 \
	  $(PY) -m pytest $(XDIST) $(TIMES) kreg tests

test-torch: venv
	KERAS_BACKEND=torch $(PY) -m pytest $(XDIST) $(TIMES) kreg tests

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) kreg-demo build site *.egg-info
