# The two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

# torch is pinned to the CPU wheel on this machine's disk (pyproject pins torch==2.13.0);
# transformers stays below 4.58 because optimum-onnx needs it. The warnings filter hides setuptools'
# note that an editable install of a package mapped from several folders uses an import finder.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e '.[runtime,train,export,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/exo2ego-edge demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
