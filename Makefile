# Two commands set everything up on a fresh machine with Python 3 and make:
#   make run ARGS="copy SRC DST"   creates .venv with mirror on first use, then runs it
#   make test                      installs the test dependencies too, then runs the suite on
#                                  every CPython >= 3.10 found (each in .venv-tests/X.Y)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# compat: the checkout goes on sys.path through a .pth line; the default editable finder
# costs every start of mirror ~25 ms of imports
INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat

.PHONY: run test bench clean

# setup.py and the C source too: a changed core is built again
$(VENV)/.installed: pyproject.toml setup.py mirror/_core.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(INSTALL) -e . >&2
	@$(PY) -m compileall -q mirror >&2  # bytecode now, even where the shell forbids writing it
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	@$(INSTALL) -e '.[test]' >&2
	@touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	@$(INSTALL) -e '.[bench]' >&2
	@touch $@

run: $(VENV)/.installed
	@$(VENV)/bin/mirror $(ARGS)

test: $(VENV)/.test-installed
	@bash tests/each_python.sh $(PYTEST_ARGS)

bench: $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-tests build *.egg-info
