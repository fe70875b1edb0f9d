# The README's two commands: `make book` and `make test`. Each creates .venv when missing and installs the project.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
UV_VERSION ?= 0.13.9

.PHONY: install test book lint browser clean lock lab

# The exact versions of requirements.lock, then the project itself (its ranges are in pyproject.toml).
# uv installs them: 3x faster than pip from an empty cache here, 35x with its cache warm (README).
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (this machine and CI set it) Python never
# writes .pyc, so without it every process compiled torch & co. from source: 19 s instead of 7 s to
# import torch, torchvision, sklearn and matplotlib, in each of the suite's kernels and subprocesses.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

# Re-resolve requirements.lock from pyproject.toml's ranges (uv; CONSTRAINTS=FILE caps versions, e.g. torch).
CONSTRAINTS ?=
lock: install
	$(VENV)/bin/uv pip compile -q --no-header pyproject.toml --extra book --extra sweep --extra export --extra dev \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(if $(CONSTRAINTS),--constraint $(CONSTRAINTS)) \
	  -o requirements.lock.body
	{ echo "# Exact versions of every package \`make book\` / \`make test\` install (the library, [book], [sweep], [export], [dev])," ; \
	  echo "# for Python 3.11 on x86-64 Linux, made by uv (\`make lock\`). pyproject.toml keeps the ranges." ; \
	  cat requirements.lock.body ; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock
	rm -f requirements.lock.body

# Open the chapters in JupyterLab (the same kernel and library as `make book`).
lab: install
	$(VENV)/bin/jupyter lab book/

install: $(STAMP)

# Headless Chromium for the book's browser test (Debian's package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped"; }

# Two worker processes (pytest-xdist), each module's tests in one of them (tests/conftest.py schedules
# them); TEST_WORKERS=0 runs the suite in this process.
test: install browser
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS)) $(PYTEST_ARGS)

book: install
	$(VENV)/bin/padim book

lint: install
	$(VENV)/bin/ruff check padim_lib tests benchmarks book

clean:
	rm -rf _build results book/_executed
