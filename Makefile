# Two entry points (see README):
#   make demo   set up .venv and run recipes/quickstart.sh on the built-in corpus (three arms + compare)
#   make test   set up .venv and run the test suite (what CI runs)
#   make test-fast   the tests not marked slow (the edit-test loop)
VENV ?= .venv
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test test-fast setup clean readme lock

setup:
	bash scripts/setup.sh $(VENV)

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/quickstart.sh

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# the edit-test loop: every test not marked slow (no recipe, pipeline or DDP run; tiny 2-step trainings stay), a few minutes
test-fast: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" tests

clean:
	rm -rf runs

# copy the generated results under docs/results into the README's include blocks
readme:
	python3 scripts/sync_readme.py

# re-pin requirements/lock.txt to what .venv runs (needs uv; see scripts/lock.sh)
lock:
	bash scripts/lock.sh
