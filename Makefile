# make test: every test; make demo: the whole story on a local lab.
# Both install what they need first: Debian packages where missing, and a
# virtualenv in .venv with the Python requirements.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DB := sqlite:///$(CURDIR)/.cache/demo/lab.db

# make test and make demo need root: they install missing Debian packages with apt-get, and the
# local lab (tests/lab) starts libvirtd and runs sshd vpshosts in mount namespaces. Checked here,
# before anything runs, rather than deep inside a test. make deps and the quick start do not.
ROOT_GOALS := $(filter test demo,$(MAKECMDGOALS))
ifneq ($(ROOT_GOALS),)
ifneq ($(shell id -u),0)
$(error make $(ROOT_GOALS) needs root: it installs Debian packages with apt-get and starts the local lab (libvirtd, and sshd vpshosts in mount namespaces; tests/lab). Run it as root. make deps and the quick start (README.md) do not need root)
endif
endif

.PHONY: test demo lint sanity units deps apt bench clean lock-server

apt:
	tools/ensure-apt @tools/apt-packages.txt @tests/lab/apt-packages.txt

$(BIN)/.installed: requirements.txt requirements-dev.txt
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Playbooks run from the checkout find the collection through ansible.cfg.
.cache/collections/ansible_collections/teuthology/lab:
	mkdir -p $(@D)
	ln -sfn ../../../.. $@

deps: apt $(BIN)/.installed .cache/collections/ansible_collections/teuthology/lab

lint: deps
	$(BIN)/ruff check plugins tests bench demo extensions

# ansible-test on a copy of the collection (tools/ansible-test; README: Sanity and unit tests),
# with the venv's own Python rather than every python3.X it finds on PATH.
ANSIBLE_TEST_PYTHON = $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

sanity: deps
	tools/ansible-test sanity --local --requirements --python $(ANSIBLE_TEST_PYTHON)

units: deps
	tools/ansible-test units --local --requirements --python $(ANSIBLE_TEST_PYTHON)

test: lint sanity units
	$(BIN)/python -m pytest

demo: deps
	rm -rf .cache/demo && mkdir -p .cache/demo
	TEUTHOLOGY_LAB_DB=$(DEMO_DB) PATH="$(CURDIR)/$(BIN):$$PATH" demo/run

# teuthology's lock_server (paddles' /nodes/ API) on BIND, in the foreground, for the database
# TEUTHOLOGY_LAB_DB names (as the modules resolve it; unset: the embedded SQLite file). exec: gunicorn
# is the recipe's process, so Ctrl-C and a SIGTERM that make passes on stop it (gracefully). gthread
# workers of one thread: one request at a time per process (one Lab each), and kept-alive connections.
# LOCK_SERVER_APP: another app to serve the same way (the tests' misbehaving servers).
BIND ?= 127.0.0.1:8080
LOCK_SERVER_WORKERS ?= $(shell nproc)
LOCK_SERVER_APP ?= ansible_collections.teuthology.lab.plugins.module_utils.lock_server:create_app()
lock-server: deps
	exec $(BIN)/gunicorn --bind '$(BIND)' --workers $(LOCK_SERVER_WORKERS) --worker-class gthread --threads 1 \
	  --no-control-socket --pythonpath .cache/collections '$(LOCK_SERVER_APP)'

bench: deps
	$(BIN)/python bench/lock_throughput.py
	$(BIN)/python bench/lock_server_throughput.py
	$(BIN)/python bench/wsgi_frameworks.py
	$(BIN)/python bench/inventory_scale.py
	$(BIN)/python bench/provision_parallel.py

clean:
	rm -rf $(VENV) .cache tests/output
