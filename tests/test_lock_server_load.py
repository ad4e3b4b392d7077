"""The lock server under contention, through HTTP, on SQLite and PostgreSQL.

A lock server's load (tests/support/lockload.py, with HttpClient): 16
processes each lock_many 1-3 nodes as their own owner, GET each granted node,
unlock_many them, on a 50-node pool, so every request is satisfiable at every
instant: no double allocation, no grant the read-back does not confirm, no
refusal, no lock left behind. 20 lock_many of the whole free pool at once:
exactly one succeeds. HTTP clients and ansible-playbook lock.yml / unlock.yml
on one PostgreSQL database at once: no node held by two owners.

Each check is a function, run by tests/test_lock_server_misbehaving.py
against servers that misbehave the way it guards against.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

from support.ansible_run import REPO, run_playbook
from support.lockload import HttpClient, LoadResult, repeated_lock_events, run_load
from support.lockserver import PaddlesClient, Served, serve
from support.seed import seed

WORKERS = 16
NODES = 50
SECONDS = 5.0
RACERS = 20
POOL = 10
PLAYBOOK_OWNER = "playbook@ci"


@pytest.fixture
def served(db_url):
    yield from serve(db_url)


def assert_no_violations(load: LoadResult, served: Served) -> None:
    assert load.violations() == {key: [] for key in load.violations()}
    assert load.cycles > WORKERS * 10, f"only {load.cycles} cycles in {load.seconds} s: the test proved little"
    leaked = served.lab.query(locked=True)
    assert leaked == [], f"locks left behind: {[(node['name'], node['locked_by']) for node in leaked]}"


def assert_locks_alternate(served: Served) -> None:
    """No node locked while locked, in the history."""
    assert repeated_lock_events(served.lab.history()) == []


def check_load(served: Served, seconds: float = SECONDS) -> LoadResult:
    seed(served.lab, "smithi", NODES)
    load = run_load(served.url, WORKERS, seconds, ["smithi"], client=HttpClient)
    assert_no_violations(load, served)
    assert_locks_alternate(served)
    return load


def _race(url: str, kind: str, barrier: Any, results: Any, index: int) -> None:
    with PaddlesClient(url) as client:
        barrier.wait()
        # count as the paddles race test sends it: 10 / 1
        results.put(client.lock_many(f"racer{index}@ci", POOL / 1, kind, "race"))


def check_whole_pool_race(served: Served, kind: str = "smithi") -> None:
    names = seed(served.lab, kind, POOL)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(served.url, kind, barrier, results, i)) for i in range(RACERS)]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=120) for _proc in procs]
    for proc in procs:
        proc.join(timeout=30)
    statuses = sorted(status for status, _answer in answers)
    granted = [answer for status, answer in answers if status == 200]
    assert len(granted) == 1, statuses
    assert statuses == [200] + [503] * (RACERS - 1)
    (winner,) = {node["locked_by"] for node in granted[0]}
    assert sorted(node["name"] for node in granted[0]) == names
    assert sorted(node["name"] for node in served.lab.query(owner=winner)) == names


def test_load(served):
    check_load(served)


def test_whole_pool_race(served):
    check_whole_pool_race(served)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_http_clients_and_playbooks_at_once(db_url, served):
    """lock.yml / unlock.yml (the modules) as one more owner among the HTTP clients, on one PostgreSQL database."""
    seed(served.lab, "smithi", NODES)
    env = {"TEUTHOLOGY_LAB_DB": db_url, "TEUTHOLOGY_LAB_OWNER": PLAYBOOK_OWNER}
    playbook_holds: list[tuple[str, list[str], float, float]] = []
    failures: list[str] = []
    load_seconds = 15.0

    def playbooks() -> None:
        deadline = time.monotonic() + load_seconds - 4
        while time.monotonic() < deadline and len(playbook_holds) < 10:
            run = run_playbook(REPO / "playbooks" / "lock.yml", "-e", "count=2", "-e", "machine_type=smithi", env=env)
            granted = time.monotonic()
            if run.returncode != 0:
                failures.append(run.output)
                return
            names = [node["name"] for node in served.lab.query(owner=PLAYBOOK_OWNER)]
            released = time.monotonic()
            run = run_playbook(REPO / "playbooks" / "unlock.yml", "-e", "all=true", env=env)
            if run.returncode != 0:
                failures.append(run.output)
                return
            playbook_holds.append((PLAYBOOK_OWNER, names, granted, released))

    player = threading.Thread(target=playbooks)
    player.start()
    try:
        load = run_load(served.url, WORKERS, load_seconds, ["smithi"], client=HttpClient)
    finally:
        player.join(timeout=300)
    assert failures == []
    assert playbook_holds, "no playbook ran during the load"
    assert all(len(hold[1]) == 2 for hold in playbook_holds), playbook_holds
    load.holds.extend(playbook_holds)  # one analysis: no node held by two owners at once
    assert_no_violations(load, served)
    assert_locks_alternate(served)
