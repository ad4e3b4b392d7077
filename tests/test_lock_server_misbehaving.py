"""Every check of the lock server's tests fails against a server that
misbehaves the way it guards against (tests/support/misbehaving.py: the
real app with one request answered wrongly, served the same way).

A check that passes here could not tell a broken server from a good one.
"""

from __future__ import annotations

import pytest
import test_lock_server as contract
import test_lock_server_load as load

from support.lockserver import serve

QUICK_LOAD = 2.0

# (flaw, the check that must catch it); the first few are paddles' own faults.
CASES = [
    ("phantom", load.check_whole_pool_race),
    ("phantom", lambda served, kind: load.check_load(served, QUICK_LOAD)),
    ("per_node_unlock", contract.check_unlock_many_is_all_or_nothing),
    ("put_applies_locked_by", contract.check_update_cannot_take_a_lock),
    ("put_unknown_200", contract.check_update_and_inventory),
    ("refuse_sometimes", lambda served, kind: load.check_load(served, QUICK_LOAD)),
    ("leaky_unlock", lambda served, kind: load.check_load(served, QUICK_LOAD)),
    ("content_type_required", contract.check_create),
    ("slash_required", contract.check_paths),
    ("ignore_filters", contract.check_list_filters),
    ("iso_time", contract.check_node_objects),
    ("flat_vm_host", contract.check_node_objects),
    ("conflict_409", contract.check_lock_one_and_unlock_one),
    ("shortfall_500", contract.check_lock_many),
]


@pytest.mark.parametrize(("flaw", "check"), CASES, ids=[f"{flaw}-{getattr(check, '__name__', 'load')}" for flaw, check in CASES])
def test_the_check_fails_against_the_flaw(tmp_path, flaw, check):
    for served in serve(f"sqlite:///{tmp_path / 'lab.db'}", f'support.misbehaving:create_app("{flaw}")'):
        with pytest.raises(AssertionError):
            check(served, "tflaw")
