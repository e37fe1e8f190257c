# Herald: `make run` starts everything on the embedded defaults; `make test` runs the suite.
VENV    ?= .venv
PYTHON  ?= python3
PORT    ?= 5000
FLASK   := $(VENV)/bin/flask --app app
CELERY  := $(VENV)/bin/celery -A workers.celery_app

# The local fake Stripe `make run` starts unless STRIPE_API_BASE points elsewhere (empty: Stripe itself).
LOCAL_STRIPE_PORT := 12111
LOCAL_STRIPE      := http://127.0.0.1:$(LOCAL_STRIPE_PORT)

.PHONY: run test lint bench install install-dev chromium clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $(VENV)/.run-installed $@

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

## run: create the virtualenv, install, migrate, start the local Stripe, load demo data, start web + worker + scheduler
run: install
	mkdir -p var
	$(FLASK) init-db
	@echo ""
	@echo "  Herald is starting on http://127.0.0.1:$(PORT)/  (signup page; /membership to join)"
	@echo "  Mail is written to var/outbox/ as .eml files. Stop with Ctrl-C."
	@echo ""
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	if [ "$${STRIPE_API_BASE-$(LOCAL_STRIPE)}" = "$(LOCAL_STRIPE)" ]; then \
	  case "$${STRIPE_SECRET_KEY:-}" in sk_live_*|rk_live_*) echo "  STRIPE_SECRET_KEY is a live key: set STRIPE_API_BASE= to use Stripe"; exit 1;; esac; \
	  echo "  Payments go to the local fake Stripe on $(LOCAL_STRIPE) (test card 4242 4242 4242 4242)."; \
	  $(VENV)/bin/python -m newsletter.fakestripe --port $(LOCAL_STRIPE_PORT) --db var/fakestripe.sqlite3 \
	    --webhook-url http://127.0.0.1:$(PORT)/webhooks/stripe --webhook-secret whsec_dev & \
	  $(VENV)/bin/python -c "import socket, time; any(socket.socket().connect_ex(('127.0.0.1', $(LOCAL_STRIPE_PORT))) == 0 or time.sleep(0.1) for _ in range(100))"; \
	fi; \
	$(FLASK) demo-data || exit 1; \
	$(CELERY) worker -B --pool=threads --concurrency=4 --loglevel=INFO -s var/celerybeat-schedule & \
	$(FLASK) run --host 127.0.0.1 --port $(PORT) --no-reload & \
	wait

## chromium: Debian's browser for the Playwright tests (never a Playwright download)
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else \
	    echo "chromium is missing: run 'sudo apt-get install chromium' (browser tests are skipped without it)"; \
	  fi; \
	fi

## axe-core for the browser tests' accessibility checks, pinned in package.json (npm registry)
node_modules/.installed: package.json
	npm install --no-audit --no-fund --no-package-lock
	touch $@

## test: install what the tests need, then run them (PostgreSQL and Redis on 127.0.0.1)
test: install-dev chromium node_modules/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## bench: send an edition end to end against a raw smtplib baseline (bench/README.md); ARGS="--readers 1000000"
bench: install-dev
	$(VENV)/bin/python -m bench.run $(ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf var
