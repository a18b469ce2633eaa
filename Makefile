# The two commands of the README: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test

.PHONY: demo test test-fast bundle system-deps venv clean

demo: system-deps venv
	$(PY) tools/demo.py

test: system-deps venv
	$(PY) -m pytest

# Everything that needs no broker, no database, no subprocess and no long run (see tests/conftest.py;
# under 15 s on the 2-core CI machine, docs/benchmarks.md), one worker per core.
test-fast: venv
	$(PY) -m pytest -q -n auto -m "not integration and not slow"

# The offline install bundle for this machine's Python and architecture (docs/install.md).
bundle: venv
	bash tools/bundle.sh --out dist

system-deps:
	@bash tools/install_system_deps.sh

venv: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

clean:
	rm -rf var/demo .pytest_cache build dist
