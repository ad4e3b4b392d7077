# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lockdb: the validators every module input goes through, and Lab on a SQLite file."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import (
    DB_ENV,
    DEFAULT_DB_PATH,
    OWNER_ENV,
    Lab,
    LabError,
    check_description,
    check_owner,
    check_token,
    default_owner,
    mask_url,
    parse_lease,
    resolve_db_url,
    split_list,
    summarize,
)

ADMIN = "admin@lab"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize("value", ["smithi001.front.sepia.ceph.com", "vps", "ubuntu", "22.04", "x86_64", "a" * 255])
def test_check_token_accepts_plain_tokens(value):
    assert check_token("name", value) == value


@pytest.mark.parametrize("value", ["", " vps", "vps\n", "a b", "-rf", ".hidden", "x;id", "$(id)", "it's", "a" * 256, None, 7])
def test_check_token_refuses_the_rest_naming_option_and_value(value):
    with pytest.raises(LabError) as error:
        check_token("machine_type", value)
    assert str(error.value).startswith(f"machine_type: {value!r} is not valid (use letters, digits, '.', '-', '_';")


def test_check_owner_allows_email_like_owners_and_says_so():
    assert check_owner("alice+ci@laptop.example.com") == "alice+ci@laptop.example.com"
    with pytest.raises(LabError, match=r"owner: 'alice smith' is not valid \(use letters, digits, '.', '-', '_', '@', '\+'"):
        check_owner("alice smith")


def test_check_description_is_one_printable_line():
    assert check_description("run-42: rados suite, 'quoted' & $ymbols") == "run-42: rados suite, 'quoted' & $ymbols"
    for bad in ("two\nlines", "tab\there", "bell\x07", "x" * 4097):
        with pytest.raises(LabError, match=r"description: .* is not valid"):
            check_description(bad)


def test_split_list_takes_yaml_lists_and_comma_strings():
    assert split_list("names", "b, a,,b , c") == ["b", "a", "c"]  # order kept, blanks and duplicates dropped
    assert split_list("names", ["vpm002", " vpm001 ", "vpm002"]) == ["vpm002", "vpm001"]
    assert split_list("names", None) == [] and split_list("names", "") == [] and split_list("names", []) == []
    with pytest.raises(LabError, match="names: 'vpm 001' is not valid"):
        split_list("names", "vpm000,vpm 001")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), (3600, 3600), ("3600", 3600), ("90s", 90), ("30m", 1800), (" 4h ", 14400), ("2d", 172800), ("1w", 604800)],
)
def test_parse_lease_units(value, seconds):
    assert parse_lease(value) == seconds


@pytest.mark.parametrize("value", ["0", 0, "-5m", "4x", "1.5h", "h", "4 hours", "30m\nreboot"])
def test_parse_lease_refuses_what_is_no_duration(value):
    with pytest.raises(LabError) as error:
        parse_lease(value)
    assert f"lease: {value!r} is not a duration (e.g. 3600, 30m, 4h, 2d, 1w)" == str(error.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://lab:s3cret@db.example.com:5432/lab", "postgresql+psycopg://lab:***@db.example.com:5432/lab"),
        ("postgresql://lab:p%40ss:word@db/lab", "postgresql://lab:***@db/lab"),
        ("postgresql://lab@db/lab", "postgresql://lab@db/lab"),  # no password: nothing to hide
        ("sqlite:////var/lib/lab.db", "sqlite:////var/lib/lab.db"),
    ],
)
def test_mask_url_hides_the_password(url, masked):
    assert mask_url(url) == masked


def test_resolve_db_url_and_default_owner_follow_the_environment(monkeypatch):
    monkeypatch.setenv(DB_ENV, "sqlite:////tmp/from-env.db")
    assert resolve_db_url("sqlite:////tmp/given.db") == "sqlite:////tmp/given.db"
    assert resolve_db_url(None) == "sqlite:////tmp/from-env.db"
    monkeypatch.delenv(DB_ENV)
    assert resolve_db_url(None).endswith(DEFAULT_DB_PATH.replace("~", "", 1)) and "~" not in resolve_db_url(None)
    monkeypatch.setenv(OWNER_ENV, "ci@jenkins")
    assert default_owner() == "ci@jenkins"
    monkeypatch.delenv(OWNER_ENV)
    assert "@" in default_owner()  # USER@HOSTNAME, as teuthology does


def test_summarize_counts_free_expired_and_vm_states():
    now = dt.datetime(2026, 11, 30, 12, 0)

    def node(machine_type, up=True, locked=False, lease=None, vm_state=None):
        return {"machine_type": machine_type, "up": up, "locked": locked, "lease_expires": lease, "vm_state": vm_state}

    nodes = [
        node("vps", vm_state="running", locked=True, lease="2026-11-30T11:59:00+00:00"),
        node("vps", vm_state="failed"),
        node("smithi", locked=True, lease="2026-11-30T12:01:00+00:00"),
        node("smithi", up=False),
        node("smithi"),
    ]
    summary = summarize(nodes, now=now)
    assert list(summary) == ["smithi", "vps"]
    zero_vms = {"creating": 0, "running": 0, "destroying": 0, "failed": 0}
    assert summary["smithi"] == {"total": 3, "up": 2, "locked": 1, "free": 1, "expired": 0, **zero_vms}
    # A free slot whose VM failed is not free: the lock rules take only slots without a VM state.
    assert summary["vps"] == {"total": 2, "up": 2, "locked": 1, "free": 0, "expired": 1, **zero_vms, "running": 1, "failed": 1}


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_url_without_a_file_is_refused(url):
    with pytest.raises(LabError, match=r"names no file; use sqlite:////absolute/path/lab\.db"):
        Lab(url)


def test_unsupported_database_error_masks_the_password():
    with pytest.raises(LabError) as error:
        Lab("mysql://lab:s3cret@db/lab")
    assert "s3cret" not in str(error.value) and "unsupported database 'mysql'" in str(error.value)


@pytest.fixture
def lab(tmp_path):
    handle = Lab(f"sqlite:///{tmp_path / 'lab.db'}")
    yield handle
    handle.close()


def test_set_node_stores_normalized_values_and_clears_with_empty_string(lab):
    changed, before, after = lab.set_node(
        "vpm001.front.sepia.ceph.com",
        {"machine_type": "vps", "mac_address": "52:54:00:AB:CD:EF", "ssh_port": "2222", "ssh_host": "127.0.0.1",
         "ssh_pub_key": f"{KEY} root@vpm001\n{KEY}\n"},
        actor=ADMIN,
    )
    assert changed and before is None
    assert after["mac_address"] == "52:54:00:ab:cd:ef" and after["ssh_port"] == 2222 and after["ssh_pub_key"] == KEY
    assert after["up"] is True and after["locked"] is False  # a new node joins the pool, free
    changed, _before, after = lab.set_node("vpm001.front.sepia.ceph.com", {"ssh_host": ""}, actor=ADMIN)
    assert changed and after["ssh_host"] is None
    unchanged = lab.set_node("vpm001.front.sepia.ceph.com", {"ssh_port": 2222}, actor=ADMIN)
    assert unchanged[0] is False
    assert [event["action"] for event in lab.history()] == ["add", "update"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"machine_type": "vps", "ssh_port": 0}, "ssh_port: 0 is not a TCP port (1-65535)"),
        ({"machine_type": "vps", "ssh_port": True}, "ssh_port: True is not a TCP port (1-65535)"),
        ({"machine_type": "vps", "up": "yes"}, "up: 'yes' is not a boolean"),
        ({"machine_type": "vps", "lease_expires": "next week"}, "lease_expires: 'next week' is not an ISO 8601 time"),
        ({"machine_type": "vps", "nosuch": "x"}, "nosuch: not a node field"),
        ({"machine_type": "vps", "ssh_pub_key": "ssh-ed25519"}, "ssh_pub_key: 'ssh-ed25519' is not 'TYPE BASE64 [comment]'"),
        ({"machine_type": "vps", "locked": True}, "locked_by: node vpm001 cannot be locked without locked_by"),
        ({"arch": "x86_64"}, "machine_type: required to add node vpm001"),
    ],
)
def test_set_node_refuses_bad_fields_and_adds_nothing(lab, fields, message):
    with pytest.raises(LabError) as error:
        lab.set_node("vpm001", fields, actor=ADMIN)
    assert message in str(error.value)
    assert lab.query() == [] and lab.history() == []


def test_lease_sets_the_expiry_and_check_mode_keeps_nothing(tmp_path, lab):
    lab.set_node("smithi001", {"machine_type": "smithi"}, actor=ADMIN)
    dry = Lab(lab.url, check_mode=True)
    try:
        locked, nodes, _ = dry.lock(owner="alice@laptop", names="smithi001", lease="2h")
        assert locked == ["smithi001"] and nodes[0]["locked_by"] == "alice@laptop"  # what would be locked ...
    finally:
        dry.close()
    assert lab.query(locked=True) == [] and [event["action"] for event in lab.history()] == ["add"]  # ... but is not
    (node,) = lab.lock(owner="alice@laptop", names=["smithi001"], lease="2h").nodes
    since, expires = (dt.datetime.fromisoformat(node[field]) for field in ("locked_since", "lease_expires"))
    assert expires - since == dt.timedelta(hours=2)
    assert since.tzinfo is not None  # ISO 8601 with an offset: UTC
