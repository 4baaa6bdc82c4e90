# The two commands of the README. Both install what they need first (scripts/setup.sh).
PY ?= python3

.PHONY: run test lint bench

run:  ## set up, then steal the real MNIST CNN on the built-in default grid
	bash scripts/setup.sh
	$(PY) -m stealkit run

test:  ## set up (with test tools), lint, type-check, run the tests
	bash scripts/setup.sh dev
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src/stealkit benchmarks
	$(PY) -m pytest -q

bench:  ## re-measure the Knockoff Nets findings (slow: about an hour on 2 cores)
	bash scripts/setup.sh
	$(PY) -m benchmarks.knockoff
