# One entry point for development. `make up` starts the whole system,
# `make test` runs the whole suite; both set up what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AXE := tests/console/node_modules/axe-core/axe.min.js
INSTALLED := $(VENV)/.installed-$(shell cat pyproject.toml deploy/kafka/pom.xml | sha256sum | cut -c1-12)

.PHONY: install up down status lint test clean translations screenshots

install: $(INSTALLED) $(AXE)

# Re-runs only when pyproject.toml or the Kafka pom changed.
$(INSTALLED): pyproject.toml deploy/kafka/pom.xml
	test -x $(BIN)/pip || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	bash deploy/kafka/kafka.sh fetch
	rm -f $(VENV)/.installed-*
	touch $@

# axe-core for the console's browser tests, pinned by tests/console/package-lock.json.
$(AXE): tests/console/package.json tests/console/package-lock.json
	npm ci --prefix tests/console --silent --no-audit --no-fund
	touch $@

# The console's catalogs: extract every string of its sources and templates, and
# merge new ones into each language's .po (fill in the Russian, then commit).
# No compile step: the console compiles the .po files when it starts.
CONSOLE := services/console/console_service
translations: install
	$(BIN)/pybabel extract -F babel.cfg --no-location --omit-header --sort-output --msgid-bugs-address="" \
		-o $(CONSOLE)/translations/messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete -i $(CONSOLE)/translations/messages.pot \
		-d $(CONSOLE)/translations -l ru

up: install
	$(BIN)/caj stack up

down:
	@if [ -x $(BIN)/caj ]; then $(BIN)/caj stack down; else bash deploy/kafka/kafka.sh stop; fi

status:
	$(BIN)/caj stack status

# Lint and import order (ruff), then types (mypy on shared/, caj/ and the
# services, migrations aside): both configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install
	@$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$status

# The console's main pages in English and Russian, to docs/screenshots/ (real stack, Debian's Chromium).
screenshots: install
	$(BIN)/pytest tests/console/screenshots.py -q -p no:cacheprovider

clean: down
	rm -rf var
