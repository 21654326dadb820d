# Two entry points (see README):
#   make demo   set up .venv and run recipes/quickstart.sh on the built-in corpus (three arms + compare)
#   make test   set up .venv and run the test suite
VENV ?= .venv
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test setup clean

setup:
	bash scripts/setup.sh $(VENV)

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash recipes/quickstart.sh

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf runs
