"""Many simultaneous lockers on one database: no node is ever locked twice,
and no satisfiable request is refused.

16 processes each hold at most 3 of 50 nodes, so at most 48 are held at any
moment: every request can be met, and any refusal is a failure. Each worker
notes when it held what (CLOCK_MONOTONIC is one clock for all processes);
two workers holding one node at overlapping times is a double allocation,
whatever the database says.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from collections import defaultdict

from support.seed import seed

WORKERS = 16
NODES = 50
MAX_HELD = 3
SECONDS = 5.0
MAX_ROUNDS = 2000  # a bound on each worker's loop, besides the time


def worker(db_url: str, index: int, barrier, results) -> None:
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

    owner = f"worker{index}@test"
    rng = random.Random(index)
    lab = Lab(db_url)
    holds, refusals, errors, rounds = [], [], [], 0
    barrier.wait()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and rounds < MAX_ROUNDS:
        rounds += 1
        want = rng.randint(1, MAX_HELD)
        try:
            _, nodes = lab.lock(owner=owner, count=want, machine_types=["smithi"])
        except LabError as error:
            refusals.append(str(error))
            continue
        got = time.monotonic()
        names = [node["name"] for node in nodes]
        if len(names) != want or any(node["locked_by"] != owner for node in nodes):
            errors.append(f"asked for {want}, got {nodes}")
        time.sleep(rng.uniform(0, 0.01))
        released = time.monotonic()
        try:
            if rng.random() < 0.5:
                _, unlocked = lab.unlock(owner=owner, names=names)
            else:
                _, unlocked = lab.unlock(owner=owner, all_nodes=True)
        except LabError as error:
            errors.append(f"unlock failed: {error}")
            continue
        if sorted(node["name"] for node in unlocked) != sorted(names):
            errors.append(f"unlocked {unlocked}, held {names}")
        holds.append((names, got, released))
    lab.close()
    results.put({"index": index, "holds": holds, "refusals": refusals, "errors": errors})


def test_concurrent_lockers(db_url, lab):
    seed(lab, "smithi", NODES)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(db_url, i, barrier, results)) for i in range(WORKERS)]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=SECONDS + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    assert [r["errors"] for r in reports] == [[]] * WORKERS
    assert [r["refusals"] for r in reports] == [[]] * WORKERS, "a satisfiable request was refused"

    intervals = defaultdict(list)
    for report in reports:
        for names, got, released in report["holds"]:
            for name in names:
                intervals[name].append((got, released, report["index"]))
    for name, spans in intervals.items():
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            assert start >= end, f"{name} held by workers {a} and {b} at once"

    locks = sum(len(names) for report in reports for names, _, _ in report["holds"])
    assert locks > WORKERS * 10, f"only {locks} locks in {SECONDS} s: the test proved little"

    # The history has every lock and unlock, alternating per node; all nodes end free.
    history = [event for event in lab.history() if event["action"] in ("lock", "unlock")]
    assert sum(event["action"] == "lock" for event in history) == locks
    assert sum(event["action"] == "unlock" for event in history) == locks
    state = {}
    for event in history:
        assert state.get(event["node"], "unlock") != event["action"], f"{event['node']}: {event['action']} twice in a row"
        state[event["node"]] = event["action"]
    assert lab.query(locked=True) == []
    assert len(lab.query(locked=False, up=True)) == NODES


def test_a_caller_holding_candidates_does_not_cause_a_refusal(db_url, lab):
    """Another caller is mid-request on the only free nodes (row locks on
    PostgreSQL, the write lock on SQLite) and then gives up: our request waits
    for it and gets the nodes instead of being refused."""
    import threading

    import sqlalchemy as sa

    names = seed(lab, "smithi", 3)
    other = sa.create_engine(lab.engine.url)
    conn = other.connect()
    if lab.is_postgres:
        tx = conn.begin()
        conn.execute(sa.text("SELECT name FROM nodes WHERE NOT locked ORDER BY name FOR UPDATE"))
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        tx = None
    timer = threading.Timer(1.5, lambda: tx.rollback() if tx else conn.exec_driver_sql("ROLLBACK"))
    timer.start()
    try:
        started = time.monotonic()
        newly_locked, nodes = lab.lock(owner="alice@laptop", count=3, machine_types=["smithi"])
        waited = time.monotonic() - started
    finally:
        timer.join()
        conn.close()
        other.dispose()
    assert newly_locked == names and [node["name"] for node in nodes] == names
    assert waited >= 1.0, "the request did not wait for the other caller"
