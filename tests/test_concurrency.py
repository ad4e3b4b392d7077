"""The lock engine under contention, on SQLite and PostgreSQL.

The load tests run a lock server's load (tests/support/lockload.py): 16
processes each lock 1-3 nodes as their own owner, read them back and unlock
them by name, on a 50-node pool, so that every request is satisfiable at
every instant and any refusal is a failure. The other tests set up, with a
second connection, the moments the load can only hit by chance.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import sqlalchemy as sa

from support.lockload import repeated_lock_events, run_load
from support.seed import seed

WORKERS = 16
NODES = 50
SECONDS = 5.0


def assert_no_violations(load):
    assert load.violations() == {key: [] for key in load.violations()}
    assert load.cycles > WORKERS * 10, f"only {load.cycles} cycles in {SECONDS} s: the test proved little"


def test_load_one_type(db_url, lab):
    seed(lab, "smithi", NODES)
    load = run_load(db_url, WORKERS, SECONDS, ["smithi"])
    assert_no_violations(load)

    # The history has every lock and unlock, alternating per node; all nodes end free.
    history = [event for event in lab.history() if event["action"] in ("lock", "unlock")]
    locks = sum(len(names) for _, names, _, _ in load.holds)
    assert sum(event["action"] == "lock" for event in history) == locks
    assert sum(event["action"] == "unlock" for event in history) == locks
    assert repeated_lock_events(history) == []
    assert lab.query(locked=True) == []


def test_load_two_types_first_type_always_wins(db_url, lab):
    """smithi can always satisfy (16 x 3 < 50), so a mira grant is a violation."""
    seed(lab, "smithi", NODES)
    seed(lab, "mira", 10)
    load = run_load(db_url, WORKERS, SECONDS, ["smithi", "mira"])
    assert_no_violations(load)


def _identical_request(db_url, barrier, results):
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    lab = Lab(db_url)
    barrier.wait()
    newly_locked, nodes, _ = lab.lock(owner="alice@laptop", count=2, machine_types=["smithi"], description="run-1")
    lab.close()
    results.put((newly_locked, [node["name"] for node in nodes]))


def test_identical_idempotent_requests_at_once_converge(db_url, lab):
    names = seed(lab, "smithi", 20)
    ctx = multiprocessing.get_context("fork")
    callers = 8
    barrier, results = ctx.Barrier(callers), ctx.Queue()
    procs = [ctx.Process(target=_identical_request, args=(db_url, barrier, results)) for _ in range(callers)]
    for proc in procs:
        proc.start()
    answers = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)

    held = [node["name"] for node in lab.query(owner="alice@laptop")]
    assert held == names[:2]
    assert all(granted == held for _, granted in answers)
    assert sorted(name for newly_locked, _ in answers for name in newly_locked) == held  # one caller locked them


class RowHolder:
    """Another transaction that row-locks some nodes (FOR UPDATE on PostgreSQL,
    the whole database on SQLite) and rolls back after ``seconds``."""

    def __init__(self, lab, names, seconds):
        from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import nodes

        self.engine = sa.create_engine(lab.engine.url)
        self.conn = self.engine.connect()
        if lab.is_postgres:
            self.tx = self.conn.begin()
            self.conn.execute(sa.select(nodes.c.name).where(nodes.c.name.in_(names)).with_for_update())
            self.release = self.tx.rollback
        else:
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")
            self.release = lambda: self.conn.exec_driver_sql("ROLLBACK")
        self.timer = threading.Timer(seconds, self.release)
        self.timer.start()

    def close(self):
        self.timer.join()
        self.conn.close()
        self.engine.dispose()


def test_a_caller_holding_candidates_does_not_cause_a_refusal(lab):
    """Another caller is mid-request on the only free nodes and then gives
    up: our request waits for it and gets the nodes instead of being refused."""
    names = seed(lab, "smithi", 3)
    holder = RowHolder(lab, names, 1.5)
    try:
        started = time.monotonic()
        newly_locked, nodes, _ = lab.lock(owner="alice@laptop", count=3, machine_types=["smithi"])
        waited = time.monotonic() - started
    finally:
        holder.close()
    assert newly_locked == names and [node["name"] for node in nodes] == names
    assert waited >= 1.0, "the request did not wait for the other caller"


def test_first_type_wins_over_rows_held_for_a_moment(lab):
    """smithi rows another caller holds for a moment (then lets go) are
    possibly free: the request waits for them rather than taking mira."""
    smithi = seed(lab, "smithi", 2)
    seed(lab, "mira", 2)
    holder = RowHolder(lab, smithi, 1.5)
    try:
        newly_locked = lab.lock(owner="alice@laptop", count=2, machine_types=["smithi", "mira"]).newly_locked
    finally:
        holder.close()
    assert newly_locked == smithi


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_rows_freed_while_waiting_are_seen(db_url, lab):
    """PostgreSQL, READ COMMITTED: a request waits for a row another caller
    holds; meanwhile a second node is unlocked. Both are free when it goes on,
    though the statement that waited started before the unlock."""
    first, second = seed(lab, "smithi", 2)
    lab.lock(owner="bob@desk", names=[second])
    holder = RowHolder(lab, [first], 1.5)
    outcome = {}

    def request():
        from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

        other = Lab(db_url)
        try:
            outcome["locked"] = other.lock(owner="alice@laptop", count=2, machine_types=["smithi"]).newly_locked
        except LabError as error:
            outcome["refused"] = str(error)
        other.close()

    locker = threading.Thread(target=request)
    try:
        locker.start()
        time.sleep(0.5)  # the request is now waiting for the first row
        lab.unlock(owner="bob@desk", names=[second])
    finally:
        holder.close()
        locker.join(timeout=60)
    assert outcome == {"locked": [first, second]}
