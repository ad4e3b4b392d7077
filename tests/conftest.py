"""Fixtures: the collection on a collections path, real databases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# support/ is on the path through pytest.ini's pythonpath, which ansible-test units (tests/unit) does not read.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.ansible_run import collections_root
from support.pgserver import PostgresServer

# Python imports the collection's module_utils the way Ansible does.
sys.path.insert(0, str(collections_root()))


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A new, empty lock database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lab.db'}"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def lab(db_url):
    """The module_utils handle on the test's database, for seeding and checking."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    handle = Lab(db_url)
    yield handle
    handle.close()
