# zhisuan: `make run` starts the platform with the demo models; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The CPU build of torch must be installed first: a bare `torch` requirement would pull CUDA.
TORCH_PIN ?= torch==2.13.0
EXTRAS ?= dev,llamacpp

.PHONY: venv run test lint typecheck unit pg bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/zhisuan serve --demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy benchmarks

pg:
	bash scripts/pg-up.sh

unit: $(STAMP) pg
	ZHISUAN_TEST_POSTGRES_URL="$${ZHISUAN_TEST_POSTGRES_URL:-postgresql+psycopg://zhisuan:zhisuan@127.0.0.1:5432/zhisuan_test}" \
		$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
