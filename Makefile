# Two commands for a fresh machine:
#   make demo   install, then run the demo grid on this machine and print its table
#   make test   install, then run the test suite
VENV ?= .venv
PYTHON ?= python3
# CPU-only machines: pin the CPU build of torch before the project so that pip does not
# pull a multi-GB CUDA build. On a GPU machine: make TORCH_SPEC='torch>=2.4,<2.15' ...
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: install demo test typecheck clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,s3]'
	touch $@

demo: install
	$(BIN)/xstilts launch experiments/demo.yaml --profile local --wait

test: install
	$(BIN)/python -m pytest -q --durations=20

typecheck: install
	.ci/typecheck

clean:
	rm -rf runs .pytest_cache .typecheck
