# make demo : the end-to-end job on the built-in sample PDFs (or PDFS=folder [QUESTIONS=file])
# make test : install what the tests need and run them
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build that lies on this disk; on a GPU machine use e.g. TORCH='torch --index-url ...'.
TORCH ?= torch==2.13.0
PDFS ?=
QUESTIONS ?=
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test poppler chromium install install-dev bench clean

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e '.[ocr,fast,samples]'
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e '.[ocr,fast,samples,visual,llamaindex,haystack,serve,dev]'
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

poppler:
	@command -v pdftoppm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq poppler-utils) >/dev/null; \
	  else \
	    echo "poppler-utils is missing: run 'sudo apt-get install -y poppler-utils' (Debian/Ubuntu)" \
	         "or 'brew install poppler' (macOS), then run make again" >&2; exit 1; \
	  fi; }

# the browser test of `agree serve`'s page (tests/serve/test_browser.py skips, saying why, without it)
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the browser test will skip" >&2

demo: poppler $(VENV)/.base
	$(VENV)/bin/agree demo $(if $(PDFS),--pdfs '$(PDFS)') $(if $(QUESTIONS),--questions '$(QUESTIONS)')

test: poppler chromium $(VENV)/.dev
	$(PY) -m pytest

bench: poppler $(VENV)/.dev
	$(PY) benchmarks/bench_maxsim.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
