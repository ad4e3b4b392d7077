# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""paddles' wire format of a node, both ways: the lab's node dicts as
paddles' ``/nodes/`` API shows them (the lock server), and paddles' node
objects as the lab's fields (the lock server's request bodies, the
importer). No rules here: those are the lock engine's (lockdb.py).

paddles' node object has 14 keys; ``vm_host`` is the VM host's own object
(teuthology reads ``status['vm_host']['name']``), which the lab records as
the host's name, ``vpshost``; ``is_vm`` follows from it. Times are naive
UTC ``YYYY-MM-DD HH:MM:SS.ffffff``, the form teuthology parses.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import HostKeyError, target_host_key
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import LabError, check_node_fields, check_token

PADDLES_FIELDS = (
    "name",
    "description",
    "up",
    "machine_type",
    "is_vm",
    "vm_host",
    "os_type",
    "os_version",
    "arch",
    "locked",
    "locked_since",
    "locked_by",
    "mac_address",
    "ssh_pub_key",
)
# The keys of a request body that paddles applies (Node.allowed_update_keys); others are ignored.
UPDATE_KEYS = frozenset(PADDLES_FIELDS) - {"name"}
# The ones that carry over to the lab's node fields as they are.
_SAME_FIELDS = ("machine_type", "arch", "os_type", "os_version", "description", "mac_address", "ssh_pub_key")
PADDLES_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# PostgreSQL's spellings of a boolean, which paddles' ?locked= and ?up= accept (it casts the string).
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def paddles_time(iso: str | None) -> str | None:
    """A node dict's ISO 8601 UTC time as paddles writes it: always 6 fractional digits."""
    if iso is None:
        return None
    return dt.datetime.fromisoformat(iso).astimezone(dt.UTC).strftime(PADDLES_TIME_FORMAT)


def parse_paddles_time(what: str, value: str) -> dt.datetime:
    """paddles' ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (naive UTC) as an aware datetime."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise LabError(f"{what}: {value!r} is not a time (YYYY-MM-DD HH:MM:SS.ffffff, UTC)") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed


def _public_key(node: dict[str, Any]) -> str | None:
    # teuthology makes each node's value its target key, which holds one key.
    try:
        return target_host_key(node["ssh_pub_key"])
    except HostKeyError:
        return None  # a row written past the lab's checks: no key rather than one teuthology cannot parse


def _host_stub(name: str) -> dict[str, Any]:
    """A VM host the lab has no node for: its name, nothing else known."""
    return {field: None for field in PADDLES_FIELDS} | {"name": name}


def to_paddles(node: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lab's node dict as paddles' full node object; ``hosts`` holds the
    node dicts of VM hosts by name (a host missing from it is shown by name)."""
    vpshost = node["vpshost"]
    vm_host = None
    if vpshost is not None:
        host = hosts.get(vpshost)
        # A host's own host is shown by name: one level, as every VM host in a lab is physical.
        vm_host = to_paddles(host, {}) if host is not None and host["name"] != node["name"] else _host_stub(vpshost)
    return {
        "name": node["name"],
        "description": node["description"],
        "up": node["up"],
        "machine_type": node["machine_type"],
        "is_vm": vpshost is not None,
        "vm_host": vm_host,
        "os_type": node["os_type"],
        "os_version": node["os_version"],
        "arch": node["arch"],
        "locked": node["locked"],
        "locked_since": paddles_time(node["locked_since"]),
        "locked_by": node["locked_by"],
        "mac_address": node["mac_address"],
        "ssh_pub_key": _public_key(node),
    }


def host_names(nodes: Iterable[dict[str, Any]]) -> set[str]:
    """The VM hosts these nodes name, that are not among them."""
    nodes = list(nodes)
    return {node["vpshost"] for node in nodes if node["vpshost"]} - {node["name"] for node in nodes}


def short_object(node: dict[str, Any], locked: bool) -> dict[str, Any]:
    """What ``/nodes/NAME/lock/`` and ``/nodes/unlock_many/`` answer per node."""
    return {
        "name": node["name"],
        "locked": locked,
        "locked_by": node["locked_by"] if locked else None,
        "machine_type": node["machine_type"],
        "is_vm": node["vpshost"] is not None,
    }


def _vm_host_name(value: Any) -> str | None:
    """``vm_host`` as a body gives it (a host's name) or as paddles shows it (the host's object)."""
    if isinstance(value, dict):
        value = value.get("name")
    if value is not None and not isinstance(value, str):
        raise LabError(f"vm_host: {value!r} is not a host name")
    return value or None


def fields_from_paddles(body: dict[str, Any]) -> dict[str, Any]:
    """The lab's node fields for the keys of a paddles body (or node object)
    has, but for the lock (``locked``, ``locked_by``, ``locked_since``), which
    is the caller's: a lock goes through the lock rules, an import keeps its
    time. Keys that paddles would not apply are left out. ``up: null``
    (paddles' "never picked") is a node out of the pool. ``is_vm`` must
    agree with ``vm_host`` (none given: no host)."""
    fields = {key: body[key] for key in _SAME_FIELDS if key in body}
    if "up" in body:
        fields["up"] = parse_bool("up", body["up"], null=False)
    if "vm_host" in body:
        fields["vpshost"] = _vm_host_name(body["vm_host"])
    if "is_vm" in body:
        is_vm = body["is_vm"]
        if not isinstance(is_vm, bool):
            raise LabError(f"is_vm: {is_vm!r} is not a boolean")
        if is_vm != (fields.get("vpshost") is not None):
            raise LabError(f"is_vm: {is_vm} disagrees with vm_host {fields.get('vpshost')!r} (a VM is a node with a vm_host)")
    return fields


def parse_bool(what: str, value: Any, *, null: bool | None = None) -> bool | None:
    """A JSON boolean (``1``/``0`` too, as Python's ``1 == True`` makes paddles
    take them), or ``null`` meaning ``null``."""
    if value is None:
        return null
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise LabError(f"{what}: {value!r} is not a boolean (true or false)")


def parse_bool_param(what: str, value: str) -> bool | None:
    """A query parameter as PostgreSQL reads a boolean (paddles casts the
    string): ``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off``,
    any case, or an unambiguous prefix; empty means no filter."""
    word = value.strip().lower()
    if not word:
        return None
    matches = {truth for truth, words in ((True, _TRUE_WORDS), (False, _FALSE_WORDS)) for w in words if w.startswith(word)}
    if len(matches) != 1:
        raise LabError(f"{what}: {value!r} is not a boolean (1, 0, true, false)")
    return matches.pop()


def parse_count(what: str, value: Any) -> int:
    """A JSON number that is a whole number of nodes, at least 1 (``10.0`` is 10)."""
    integral = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise LabError(f"{what}: {value!r} is not a whole number")
    if value < 1:
        raise LabError("cannot lock less than 1 node")
    return int(value)


def imported_node(obj: Any) -> tuple[str, dict[str, Any], dt.datetime | None]:
    """A node object of paddles' ``GET /nodes/`` as the lab's ``set_node``
    takes it: (name, every field, null ones as ``""`` to clear them; the time
    it was locked). A lock is kept as it is: owner, description, time.
    Validated as the engine validates a node's fields."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise LabError(f"node: {str(obj)[:80]!r} is not a paddles node object (no name)")
    name = check_token("name", obj["name"])
    fields = fields_from_paddles(obj)
    if not fields.get("machine_type"):
        raise LabError("machine_type: none (the lab needs one per node)")
    fields["up"] = bool(fields.get("up"))  # null (never picked by paddles): out of the pool
    fields["locked"] = bool(parse_bool("locked", obj.get("locked")))
    fields["locked_by"] = obj.get("locked_by") if fields["locked"] else None
    since = parse_paddles_time("locked_since", obj["locked_since"]) if fields["locked"] and obj.get("locked_since") else None
    fields = {field: "" if value is None else value for field, value in fields.items()}
    check_node_fields(fields)
    return name, fields, since
