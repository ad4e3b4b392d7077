"""Schema migrations: a version-1 database made by the collection before the
first migration (tests/fixtures/schema_v1) is brought up to date on first
use, nothing lost; a database newer than the collection is refused."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.ansible_run import run_tasks, task
from support.pgserver import PASSWORD, USER

FIXTURES = Path(__file__).parent / "fixtures" / "schema_v1"
V1_NODES = [
    "smithi001.front.sepia.ceph.com",
    "smithi002.front.sepia.ceph.com",
    "smithi003.front.sepia.ceph.com",
    "vpm001.front.sepia.ceph.com",
    "vpm002.front.sepia.ceph.com",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def v1_db(request, tmp_path):
    """A version-1 lock database, loaded from the fixture's dump."""
    if request.param == "sqlite":
        path = tmp_path / "lab.db"
        with sqlite3.connect(path) as conn:
            conn.executescript((FIXTURES / "sqlite.sql").read_text())
        return f"sqlite:///{path}"
    server = request.getfixturevalue("pg_server")
    url = server.create_database()
    database = url.rsplit("/", 1)[1]
    subprocess.run(
        [f"{server.bindir}/psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port), "-U", USER,
         "-d", database, "-f", str(FIXTURES / "postgresql.sql")],
        env={**os.environ, "PGPASSWORD": PASSWORD}, check=True, capture_output=True, timeout=60,
    )
    return url


def relations(url):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            names = conn.execute(sa.text("SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace "
                                         "WHERE nspname = 'public'")).scalars().all()
        else:
            names = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")).scalars().all()
    engine.dispose()
    return sorted(names)


def fresh_db(like: str, request) -> str:
    """A new lock database of the kind of ``like``, made by the collection at its current version."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    if like.startswith("sqlite"):
        url = f"sqlite:///{Path(like.split(':///', 1)[1]).parent / 'fresh.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    Lab(url).close()
    return url


def test_a_version_1_database_is_upgraded_with_nothing_lost(v1_db, request):
    assert "nodes" in relations(v1_db)
    # The first use is a read: the upgrade happens all the same, and the read sees v1's data.
    run = run_tasks([task("node_info", "all", db=v1_db, history=True)])
    assert run.returncode == 0, run.output
    nodes = {node["name"]: node for node in run.result("all")["nodes"]}
    assert sorted(nodes) == V1_NODES
    assert [nodes[n]["locked_by"] for n in V1_NODES] == ["alice@laptop", "alice@laptop", None, "bob@desk", None]
    assert nodes["smithi003.front.sepia.ceph.com"]["up"] is False
    vpm = nodes["vpm001.front.sepia.ceph.com"]
    assert (vpm["ssh_host"], vpm["ssh_port"], vpm["description"]) == ("127.0.0.1", 2222, "run-2")
    assert vpm["ssh_pub_key"].startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")
    smithi = nodes["smithi001.front.sepia.ceph.com"]
    lease = dt.datetime.fromisoformat(smithi["lease_expires"]) - dt.datetime.fromisoformat(smithi["locked_since"])
    assert lease == dt.timedelta(hours=4)
    events = run.result("all")["events"]
    assert len(events) == 12 and events[5]["details"] == {"note": "disk errors"}

    after = relations(v1_db)
    # Exactly the tables, keys, sequences and indexes of a database made at the current version.
    assert after == relations(fresh_db(v1_db, request))
    # Nothing of version 1's names is left to collide with another application's
    # (paddles' table is called nodes): tables, keys, sequences, indexes.
    assert [name for name in after if not name.startswith(("lab_", "ix_lab_"))] == []

    # The upgraded database works: lock, unlock, history goes on.
    run = run_tasks(
        [
            task("lock", "lock", db=v1_db, count=1, machine_type="vps", owner="carol@awx", os_type="ubuntu"),
            task("unlock", "unlock", db=v1_db, names=["smithi001.front.sepia.ceph.com"], owner="alice@laptop"),
            task("node", "add", db=v1_db, name="smithi004", machine_type="smithi"),
            task("node_info", "history", db=v1_db, history=True),
        ]
    )
    assert run.returncode == 0, run.output
    assert run.result("lock")["locked"] == ["vpm002.front.sepia.ceph.com"]
    assert len(run.result("history")["events"]) == 12 + 3


def test_paddles_can_share_an_upgraded_postgresql_database(pg_server):
    url = pg_server.create_database()
    run = run_tasks([task("node", "add", db=url, name="smithi001", machine_type="smithi")])
    assert run.returncode == 0, run.output
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # paddles' own table and its implicit relations
        conn.execute(sa.text("CREATE TABLE nodes (id SERIAL PRIMARY KEY, name VARCHAR(255) UNIQUE, locked BOOLEAN)"))
        conn.execute(sa.text("CREATE TABLE events (id SERIAL PRIMARY KEY)"))
    engine.dispose()
    run = run_tasks([task("lock", "lock", db=url, count=1, machine_type="smithi", owner="carol@awx")])
    assert run.result("lock")["locked"] == ["smithi001"]


def test_a_newer_schema_is_refused(db_url, lab):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import SCHEMA_VERSION, lab_schema

    with lab.engine.begin() as conn:
        conn.execute(lab_schema.update().values(version=SCHEMA_VERSION + 1))
    run = run_tasks([task("node_info", "list", ignore_errors=True, db=db_url), task("lock", "lock", ignore_errors=True, db=db_url,
                                                                                    count=1, machine_type="smithi")])
    for name in ("list", "lock"):
        message = run.result(name)["msg"]
        assert f"has schema version {SCHEMA_VERSION + 1}, newer than this collection's {SCHEMA_VERSION}: upgrade teuthology.lab" in message
