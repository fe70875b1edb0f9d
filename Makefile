# The README's two commands: `make book` and `make test`. Each creates .venv when missing and installs the project.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test book lint browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[book,sweep,dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the book's browser test (Debian's package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped"; }

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

book: install
	$(VENV)/bin/padim book

lint: install
	$(VENV)/bin/ruff check padim_lib tests benchmarks book

clean:
	rm -rf _build results book/_executed
