# Two entry points for a fresh machine:  `make book`  and  `make test`.
# Both create the virtual environment .venv from scratch when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Datasets: ../shared/data when it is there (offline), else data/raw (torchvision downloads there).
ifneq ($(wildcard ../shared/data/MNIST),)
export NCUTILS_DATA ?= $(abspath ../shared/data)
endif

.PHONY: setup book test clean
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --isolated -q --upgrade pip setuptools
	$(BIN)/python -m pip install --isolated -q -r requirements.txt
	$(BIN)/python -m pip install --isolated -q --no-deps --no-build-isolation -e .
	touch $@

book: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/jupyter-book build . -W -n --keep-going

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/test.sh

clean:
	rm -rf _build
