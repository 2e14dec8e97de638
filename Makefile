# The two commands a fresh machine needs: `make demo` and `make test`.
# Both install what the project needs: system tools through apt-get when missing,
# and a .venv with the package and its test extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SYSTEM_TOOLS := ffmpeg ffprobe redis-server
APT_PACKAGES := ffmpeg redis-server

.PHONY: demo test system venv clean

demo: system venv
	$(BIN)/recorder demo

# Only the tests need a browser and PostgreSQL: the UI tests drive Debian's chromium with
# Playwright (which cannot download its own build here), and every database test also runs
# on a throwaway PostgreSQL server.
test: SYSTEM_TOOLS += /usr/bin/chromium /usr/lib/postgresql/*/bin/postgres
test: APT_PACKAGES += chromium postgresql
test: system venv
	$(BIN)/pytest -q

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
