"""Bad input: a clear error naming the input, and the database unchanged."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from support.ansible_run import run_tasks, task
from support.pgserver import PASSWORD
from support.seed import seed, snapshot

NODE = "smithi001.front.sepia.ceph.com"
GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
# Well-formed base64 of a key blob that names ssh-rsa.
SECRET_IN_FILE = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
RSA_BLOB_HEADER = base64.b64encode(struct.pack(">I", 7) + b"ssh-rsa" + struct.pack(">I", 1) + b"\x01").decode()

# (module, arguments, the error message must contain)
CASES = [
    ("lock", {"names": ["vpm 001"]}, "names: 'vpm 001' is not valid"),
    ("lock", {"names": ["vpm001;reboot"]}, "names: 'vpm001;reboot' is not valid"),
    ("lock", {"names": ["vpm001'"]}, "names: \"vpm001'\" is not valid"),
    ("lock", {"names": ["$(reboot)"]}, "names: '$(reboot)' is not valid"),
    ("lock", {"names": ["nosuch.front.sepia.ceph.com"]}, "names: unknown node nosuch.front.sepia.ceph.com"),
    ("lock", {"count": 1, "machine_type": "vps`id`"}, "machine_type: 'vps`id`' is not valid"),
    ("lock", {"count": 1, "machine_type": "nosuch"}, "machine_type: no nodes of type nosuch in the lab"),
    ("lock", {"count": 1, "machine_type": "smithi", "os_type": "ubuntu&"}, "os_type: 'ubuntu&' is not valid"),
    ("lock", {"count": 1, "machine_type": "smithi", "os_version": "22 04"}, "os_version: '22 04' is not valid"),
    ("lock", {"count": 1, "machine_type": "smithi", "arch": "x86|64"}, "arch: 'x86|64' is not valid"),
    ("lock", {"count": 1, "machine_type": "smithi", "owner": "alice smith"}, "owner: 'alice smith' is not valid"),
    ("lock", {"count": 1, "machine_type": "smithi", "description": "two\nlines"}, "description: 'two\\nlines' is not valid"),
    ("lock", {"count": 0, "machine_type": "smithi"}, "count: 0 is not a number of nodes (at least 1)"),
    ("lock", {"count": -2, "machine_type": "smithi"}, "count: -2 is not a number of nodes (at least 1)"),
    ("lock", {"count": 1, "machine_type": "smithi", "lease": "4x"}, "lease: '4x' is not a duration"),
    ("lock", {"count": 1, "machine_type": "smithi", "lease": "0"}, "lease: '0' is not a duration"),
    ("lock", {"count": 1, "machine_type": "smithi", "lease": "99999999999w"},
     "lease: '99999999999w' is longer than the longest lease, 366 days"),
    ("lock", {"count": 1, "machine_type": "smithi", "lease": "367d"}, "lease: '367d' is longer than the longest lease"),
    ("lock", {"count": 1, "machine_type": "smithi", "lease": "9" * 40}, "is not a duration"),
    ("unlock", {"names": ["smithi001.front.sepia.ceph.com", "nosuch"]}, "names: unknown node nosuch"),
    ("unlock", {"names": ["bad name"]}, "names: 'bad name' is not valid"),
    ("unlock", {}, "names: give either names or all: true"),
    ("node", {"name": "new node", "machine_type": "smithi"}, "name: 'new node' is not valid"),
    ("node", {"name": "new001"}, "machine_type: required to add node new001"),
    ("node", {"name": NODE, "ssh_pub_key": "ssh-ed25519 not!base64"},
     "ssh_pub_key: the key of type ssh-ed25519 is not valid base64 key data"),
    ("node", {"name": NODE, "ssh_pub_key": f"ssh-ed25519 {RSA_BLOB_HEADER}"},
     "ssh_pub_key: the key data says 'ssh-rsa' but the line says 'ssh-ed25519'"),
    ("node", {"name": NODE, "ssh_pub_key": f"{GOOD_KEY}\nssh-foo AAAA"},
     "ssh_pub_key: 'ssh-foo' is not a known SSH key type"),
    ("node", {"name": NODE, "ssh_pub_key": "AAAAC3NzaC1lZDI1NTE5"},
     "ssh_pub_key: 'AAAAC3NzaC1lZDI1NTE5' is not 'TYPE BASE64 [comment]'"),
    ("node", {"name": NODE, "mac_address": "52:54:00:zz:00:01"},
     "mac_address: '52:54:00:zz:00:01' is not a MAC address"),
    ("node", {"name": NODE, "ssh_port": 70000}, "ssh_port: 70000 is not a TCP port"),
    ("node", {"name": NODE, "vpshost": "mira001 -oProxyCommand=x"}, "vpshost: 'mira001 -oProxyCommand=x' is not valid"),
    ("node", {"name": NODE, "lease_expires": "tomorrow"}, "lease_expires: 'tomorrow' is not an ISO 8601 time"),
    ("node", {"name": NODE, "locked": True}, "locked_by: node smithi001.front.sepia.ceph.com cannot be locked without"),
    ("node", {"name": NODE, "machine_type": ""}, "machine_type: cannot be empty"),
    ("node", {"name": NODE, "up": "maybe"}, "argument 'up' is of type str and we were unable to convert to bool"),
    ("node_info", {"machine_type": "smithi;id"}, "machine_type: 'smithi;id' is not valid"),
    ("node_info", {"owner": "a b"}, "owner: 'a b' is not valid"),
]

# Database URLs that are wrong; the password must never show. (Ansible's no_log
# masks the whole value of db where it appears verbatim, a URL without password too.)
BAD_URLS = [
    ("not a url", "db: '********' is neither a database URL nor the absolute path of a file holding one"),
    (f"mysql://lab:{PASSWORD}@127.0.0.1/lab", "db: 'mysql://lab:***@127.0.0.1/lab': unsupported database 'mysql'"),
    (f"postgresql+nosuchdriver://lab:{PASSWORD}@127.0.0.1/lab", "db: no driver for 'postgresql+nosuchdriver://lab:***@127.0.0.1/lab'"),
    (f"postgresql+psycopg://lab:{PASSWORD}@127.0.0.1:1/lab", "db: cannot use database postgresql+psycopg://lab:***@127.0.0.1:1/lab:"),
    ("sqlite:////nonexistent-dir/lab.db", "db: no lab database at /nonexistent-dir/lab.db; lock or add a node to create it"),
]


def test_bad_input_is_refused_and_changes_nothing(db_url, lab):
    seed(lab, "smithi", 2)
    lab.lock(owner="alice@laptop", names=["smithi002.front.sepia.ceph.com"])
    before = snapshot(lab)
    tasks = [task(module, f"case {i}", ignore_errors=True, db=db_url, **args) for i, (module, args, _) in enumerate(CASES)]
    run = run_tasks(tasks)
    for i, (module, args, expected) in enumerate(CASES):
        result = run.result(f"case {i}")
        assert result["failed"], (module, args, result)
        assert expected in result["msg"], (module, args, result["msg"])
    assert snapshot(lab) == before


@pytest.mark.parametrize("verbosity", ["-v", "-vvvv"])
def test_bad_database_urls_name_the_input_and_never_show_the_password(pg_server, tmp_path, verbosity):
    good = pg_server.create_database()
    assert PASSWORD in good
    # The URLs come in as extra vars, as a secret would: Ansible quotes the
    # playbook's own text around a failed task, so a literal there would show.
    # db may also name a file holding the URL (AWX's credential type injects that).
    # A file is read only if it holds exactly one URL of a database we use; the
    # error names the file and never shows what it holds (a key, a password).
    url_files = {name: tmp_path / f"{name}.url" for name in ("good", "junk", "mysql", "json", "two")}
    url_files["good"].write_text(good + "\n")
    url_files["junk"].write_text("not a url\n")
    url_files["mysql"].write_text(BAD_URLS[1][0])
    url_files["json"].write_text(json.dumps({"type": "service_account", "private_key": SECRET_IN_FILE, "uri": "https://x.example"}))
    url_files["two"].write_text(f"{good}\n{good}\n")
    not_one_url = "db: file ******** does not hold exactly one database URL (sqlite:/// or postgresql+psycopg://)"
    bad_urls = [
        *BAD_URLS,
        *((str(url_files[name]), not_one_url) for name in ("junk", "mysql", "json", "two")),
        (str(tmp_path / "missing.url"), "is neither a database URL nor the absolute path of a file holding one"),
    ]
    urls = tmp_path / "urls.json"
    urls.write_text(json.dumps({"urls": [url for url, _ in bad_urls], "good": good}))
    tasks = [task("node_info", f"url {i}", ignore_errors=True, db=f"{{{{ urls[{i}] }}}}") for i in range(len(bad_urls))]
    tasks += [
        task("node", "good", db="{{ good }}", name="smithi001", machine_type="smithi"),
        task("node", "good from a file", db=str(url_files["good"]), name="smithi002", machine_type="smithi"),
        task("lock", "refused", ignore_errors=True, db="{{ good }}", count=5, machine_type="smithi"),
    ]
    run = run_tasks(tasks, verbosity, "-e", f"@{urls}")
    for i, (_, expected) in enumerate(bad_urls):
        result = run.result(f"url {i}")
        assert result["failed"] and expected in result["msg"], result["msg"]
    assert run.result("good")["changed"] is True
    assert run.result("good from a file")["changed"] is True
    assert run.result("refused")["msg"] == "requested 5 smithi nodes, 2 free"
    for secret in (PASSWORD, SECRET_IN_FILE):
        assert secret not in run.output
        assert secret not in json.dumps(run.results)
