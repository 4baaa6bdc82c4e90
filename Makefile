# The two commands of the README. Both install what they need first (scripts/setup.sh), into the
# interpreter that then runs them: `make test PY=/path/to/python` sets up and tests that one.
PY ?= python3

.PHONY: run test lint bench

run:  ## set up, then steal the real MNIST CNN on the built-in default grid
	PYTHON=$(PY) bash scripts/setup.sh
	$(PY) -m stealkit run

test:  ## set up (with test tools), lint, type-check, run the tests
	PYTHON=$(PY) bash scripts/setup.sh dev
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src/stealkit benchmarks
	$(PY) -m pytest -q

bench:  ## re-measure the Knockoff Nets findings (slow: about an hour on 2 cores)
	PYTHON=$(PY) bash scripts/setup.sh
	$(PY) -m benchmarks.knockoff
