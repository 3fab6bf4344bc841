# The book's two commands:  `make book` builds the whole book (executing every chapter)
# and `make test` runs the test suite (which builds the book too). Each sets itself up
# in a local virtual environment (.venv) on a fresh machine with Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision must be a pair that imports together (open_clip needs torchvision);
# this pair is known to work on Linux x86_64 and is on the CI machine's disk.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BOOK_HTML := _build/html
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip lists every local index folder it skips; keep the log readable.
QUIET_PIP := grep -v "^WARNING: Location" || true

.PHONY: venv book test unit sync sync-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC) 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -m pip install -q -e ".[book,test]" 2>&1 | { $(QUIET_PIP); }
	$(BIN)/python -c "import torch, torchvision, open_clip, scaleinv_utils"
	touch $@

venv: $(VENV)/.installed

# Reference implementations the tests compare against (test-only; DADApy needs a patched build).
$(VENV)/.references: $(VENV)/.installed tests/tools/install_dadapy.sh
	tests/tools/install_dadapy.sh $(BIN)/python
	touch $@

sync: venv  ## regenerate each notebook from its reviewed text form
	$(BIN)/jupytext --sync notebooks/text/*.md

sync-check: venv  ## fail when a notebook and its text form disagree
	$(BIN)/python -m pytest -q tests/test_notebooks.py

book: venv sync-check
	rm -rf _build/html _build/jupyter_execute _build/chapter_numbers.jsonl
	mkdir -p _build
	SCALEINV_RECORD=$(CURDIR)/_build/chapter_numbers.jsonl \
	  $(BIN)/jupyter-book build . --all --config book/_config.yml --toc book/_toc.yml --keep-going
	@test -f $(BOOK_HTML)/index.html && echo "Book built: $(BOOK_HTML)/index.html"

unit: venv  ## the unit tests only (no book build)
	$(BIN)/python -m pytest -q -m "not book" tests

# Headless Chromium for the rendered-HTML check (Debian packages; needs root or sudo).
$(VENV)/.browser: $(VENV)/.installed tests/tools/install_browser.sh
	tests/tools/install_browser.sh $(BIN)/python
	touch $@

test: book $(VENV)/.references $(VENV)/.browser
	SCALEINV_REQUIRE_BOOK=1 SCALEINV_REQUIRE_REFERENCES=1 SCALEINV_REQUIRE_BROWSER=1 SCALEINV_REQUIRE_COLAB_CHECK=1 \
	  $(BIN)/python -m pytest -q --durations=15 tests

clean:
	rm -rf _build
