# The two commands a fresh machine needs: `make demo` and `make test`.
# Both install what the project needs: system tools through apt-get when missing,
# and a .venv with the package and its test extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_TOOLS := ffmpeg ffprobe redis-server
APT_PACKAGES := ffmpeg redis-server

.PHONY: demo test reliability bench system venv clean

demo: system venv
	$(BIN)/recorder demo

# Only the tests need a browser and PostgreSQL: the UI tests drive Debian's chromium with
# Playwright (which cannot download its own build here), and every database test also runs
# on a throwaway PostgreSQL server.
test: SYSTEM_TOOLS += /usr/bin/chromium /usr/lib/postgresql/*/bin/postgres
test: APT_PACKAGES += chromium postgresql
test: system venv
	$(BIN)/pytest -q --ignore=tests/reliability

# Fault and fuzz suites, not part of `make test` (a few minutes): serve and worker processes
# killed and starved, hostile inputs, on SQLite and PostgreSQL. Ends with a table of figures and
# fails if any answered callback was lost or duplicated, or any answer was an unexpected 5xx.
reliability: SYSTEM_TOOLS += /usr/lib/postgresql/*/bin/postgres
reliability: APT_PACKAGES += postgresql
reliability: system venv
	$(BIN)/pytest tests/reliability -q

# Benchmarks, not part of `make test` (bench/RESULTS.md): wrk loads the web server, the scale
# bench also runs on PostgreSQL. `make bench BENCH_ARGS=--quick` is the short form for CI.
bench: SYSTEM_TOOLS += wrk /usr/lib/postgresql/*/bin/postgres
bench: APT_PACKAGES += wrk postgresql
bench: system venv $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

system:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || ls $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get ..."; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
		else echo "error: missing$$missing and not root (no sudo): install $(APT_PACKAGES) yourself" >&2; exit 1; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null \
		|| { echo "error: apt-get could not install $(APT_PACKAGES)" >&2; exit 1; }; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) data
