# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: locks
short_description: The lab's locked nodes as targets, with their host keys pinned
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
description:
  - Lists the nodes of the teuthology.lab lock database, by default every locked node, as hosts ready for a test run.
  - Each host is named by the node's name, with C(ansible_host) (the node's C(ssh_host), else its name),
    C(ansible_port) (C(ssh_port) when set), C(ansible_user), and every node field as a variable prefixed
    C(teuthology_) (C(teuthology_machine_type), C(teuthology_vpshost), C(teuthology_locked_by),
    C(teuthology_ssh_pub_key), ...).
  - "Groups: one per machine type, C(vps) for nodes with a vpshost, and C(vpshost_NAME) per vpshost (names made safe
    for Ansible)."
  - "With O(locked=true) (the default), every node listed is also in the group C(teuthology_lab_targets) (present even
    when empty), so that a play or an AWX job template can target the locked nodes without C(all), which also holds
    the vpshosts and any other host of a mixed inventory. The free pool (O(locked=false)) is never put in it."
  - "Host keys are pinned: ssh checks the node's recorded keys strictly and nothing else, even when host key checking is
    off globally (AWX turns it off for every job): each pinned host sets C(ansible_ssh_host_key_checking=true), which
    beats the global setting, and its own C(ansible_control_path), which changes with the node, its lock and its keys
    and names the remote user and port (ssh fills in C(%r) and C(%p) when it connects, so a user or port set after the
    inventory, with C(-e ansible_user=...) or play vars, counts too), so that no live ControlMaster of an earlier VM
    on the same address, or of another remote user, is reused. The host key options are all set on the ssh command
    line, which beats any ssh_config (C(VerifyHostKeyDNS=no), and a C(KnownHostsCommand) of the plugin's or
    V(none)). The user's C(~/.ssh/known_hosts) is never read or written."
  - A node with no recorded key, or with a key that fails validation, is listed unpinned with a warning naming it.
  - A node whose name or C(ssh_host) is not a host name or address (a row written into the database past the
    collection's checks, such as an C(ssh_host) of C(-oProxyCommand=...)) is not listed at all, with a warning naming
    it.
  - The inventory source file's name must end in C(locks.yml) or C(locks.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [teuthology.lab.locks]
    type: str
  db:
    description:
      - The lock database, as a SQLAlchemy URL (V(sqlite:////path/lab.db), V(postgresql+psycopg://user:password@host/lab)).
      - If not set, E(TEUTHOLOGY_LAB_DB); if that is not set either, the embedded file
        C(~/.local/share/teuthology-lab/lab.db).
      - Instead of a URL, the absolute path of a file that holds exactly one URL (what the AWX credential type injects).
      - A database that does not exist yet (a missing SQLite file, a PostgreSQL database without the lab's tables) is an
        error; the plugin never creates one.
    type: str
    env:
      - name: TEUTHOLOGY_LAB_DB
  owner:
    description:
      - Only nodes locked by this owner. Default, every locked node.
    type: str
    env:
      - name: TEUTHOLOGY_LAB_OWNER
  machine_types:
    description: Only nodes of these machine types.
    type: list
    elements: str
    default: []
  description:
    description: Only nodes whose lock description contains this text (case-sensitive; C(%) and C(_) are plain characters).
    type: str
  locked:
    description: V(true) lists locked nodes, V(false) the free pool.
    type: bool
    default: true
  user:
    description: C(ansible_user) of the targets (C(ubuntu), as teuthology's targets).
    type: str
    default: ubuntu
    env:
      - name: TEUTHOLOGY_LAB_USER
    ini:
      - section: teuthology_lab
        key: user
  host_key_mode:
    description:
      - How the recorded keys are handed to ssh.
      - V(known_hosts_command) (the default) needs no file, only host variables, so it survives an AWX inventory sync
        into a job; per host C(ansible_ssh_common_args) carries C(-o StrictHostKeyChecking=yes -o HostKeyAlias=NAME
        -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile=/dev/null -o KnownHostsCommand=... -o
        VerifyHostKeyDNS=no), where the command prints the recorded keys (OpenSSH 8.5 or later). No shell runs that
        command; ssh splits it into words itself (shell-like quoting), expands C(%) tokens and C(${VAR}) in its
        arguments (the command writes C(%%) for printf's C(%)) and executes it. Every key is validated strictly
        before it is written there.
      - V(known_hosts_file) writes C(NAME KEY) lines of the listed nodes to O(known_hosts_file) (atomically, mode 0600)
        and points C(UserKnownHostsFile) at it, with C(KnownHostsCommand=none) and the same alias, strict checking,
        C(VerifyHostKeyDNS=no) and control path; for terminal use and older OpenSSH.
      - V(none) pins nothing; the keys are only data (C(teuthology_ssh_pub_key)).
    type: str
    choices: [known_hosts_command, known_hosts_file, none]
    default: known_hosts_command
    env:
      - name: TEUTHOLOGY_LAB_HOST_KEY_MODE
    ini:
      - section: teuthology_lab
        key: host_key_mode
  known_hosts_file:
    description:
      - The file that O(host_key_mode=known_hosts_file) writes, used as given.
      - If not set, a file per inventory source, C(~/.cache/teuthology-lab/known_hosts-HASH), HASH naming the source
        file's path and its query (O(db) without its password, O(owner), O(machine_types), O(description),
        O(locked)), so that two sources, or two runs of one source with other filters, do not overwrite each other's
        file.
    type: path
    env:
      - name: TEUTHOLOGY_LAB_KNOWN_HOSTS
    ini:
      - section: teuthology_lab
        key: known_hosts_file
notes:
  - Options are read from the inventory source file first, then from the environment variables and the
    C([teuthology_lab]) section of C(ansible.cfg) named above.
  - Values the plugin sets are plain strings, never templated.
  - "The control socket of a pinned host is C(CONTROL_PATH_DIR/tlab-HASH-USER@PORT): keep Ansible's
    C(control_path_dir) short, since that path and the 17 characters ssh appends to it while it sets the master up
    must fit in a unix socket path, 108 bytes (104 on BSD and macOS)."
requirements:
  - SQLAlchemy >= 2.0
  - psycopg >= 3.1 (for PostgreSQL)
seealso:
  - module: teuthology.lab.lock
"""

EXAMPLES = r"""
# inventory/locks.yml: what I locked, keys pinned
plugin: teuthology.lab.locks
owner: alice@laptop
# then: ansible teuthology_lab_targets -i inventory/locks.yml -m ping

---
# every locked vps node of one run, with groups by OS
plugin: teuthology.lab.locks
db: postgresql+psycopg://lab@db.example.com/lab
machine_types: [vps]
description: run-1234
keyed_groups:
  - key: teuthology_os_type
    prefix: os

---
# the free pool, for an admin
plugin: teuthology.lab.locks
locked: false
host_key_mode: none
"""

import hashlib
import json
import os
import tempfile

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import HostKeyError, check_host, known_hosts_lines, pinned_ssh_vars
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import HAS_SQLALCHEMY, Lab, LabError, mask_url

display = Display()

_QUERY_OPTIONS = ("db", "owner", "machine_types", "description", "locked")
# Every locked node the plugin lists: what a play or AWX job template targets instead of all.
TARGETS_GROUP = "teuthology_lab_targets"


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "teuthology.lab.locks"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("locks.yml", "locks.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        unknown = sorted(set(config) - set(self._options))
        if unknown:
            raise AnsibleParserError(f"teuthology.lab.locks: unknown option {', '.join(unknown)} in {path}")
        if not HAS_SQLALCHEMY:
            raise AnsibleParserError("teuthology.lab.locks needs the Python package SQLAlchemy (pip install sqlalchemy)")
        query = {option: self.get_option(option) for option in _QUERY_OPTIONS}
        # The cache key and the default known_hosts file name the query, not only the file:
        # db and owner may come from the environment. Never the password, not even hashed.
        named = {**query, "db": query["db"] and mask_url(query["db"])}
        cache_key = f"{self.get_cache_key(path)}_{_digest(named)}"
        use_cache = self.get_option("cache") and cache
        nodes = self._cache.get(cache_key) if use_cache else None
        if nodes is None:
            nodes = self._query(query)
            if self.get_option("cache"):
                self._cache[cache_key] = nodes
        known_hosts_file = self.get_option("known_hosts_file") or os.path.expanduser(
            f"~/.cache/teuthology-lab/known_hosts-{_digest({'source': path, **named})}"
        )
        self._populate(nodes, known_hosts_file)

    def _query(self, query):
        try:
            lab = Lab(query["db"], create=False)
            try:
                return lab.query(
                    locked=query["locked"],
                    owner=query["owner"] if query["locked"] else None,
                    machine_types=query["machine_types"],
                    description=query["description"],
                )
            finally:
                lab.close()
        except LabError as error:
            raise AnsibleParserError(f"teuthology.lab.locks: {error}") from None

    def _populate(self, nodes, known_hosts_file):
        inventory = self.inventory
        mode = self.get_option("host_key_mode")
        user = self.get_option("user")
        locked = self.get_option("locked")
        constructed = [self.get_option(option) for option in ("compose", "groups", "keyed_groups")]
        strict = self.get_option("strict")
        known_hosts = []
        groups = set()
        if locked:
            inventory.add_group(TARGETS_GROUP)
        for node in nodes:
            name = node["name"]
            unfit = _unfit_address(node)
            if unfit:
                display.warning(f"teuthology.lab.locks: node {name!r} is not listed: {unfit}")
                continue
            inventory.add_host(name)
            if locked:
                inventory.add_child(TARGETS_GROUP, name)
            memberships = [node["machine_type"]]
            if node["vpshost"]:
                memberships += ["vps", f"vpshost_{node['vpshost']}"]
            for group in memberships:
                group = to_safe_group_name(group, force=True, silent=True)
                if group not in groups:
                    inventory.add_group(group)
                    groups.add(group)
                inventory.add_child(group, name)
            hostvars = {f"teuthology_{field}": value for field, value in node.items()}
            hostvars["ansible_host"] = node["ssh_host"] or name
            hostvars["ansible_user"] = user
            if node["ssh_port"]:
                hostvars["ansible_port"] = node["ssh_port"]
            if mode != "none":
                if not node["ssh_pub_key"]:
                    display.warning(f"teuthology.lab.locks: node {name} has no recorded host key; listed unpinned")
                else:
                    try:
                        hostvars.update(pinned_ssh_vars(node, mode, known_hosts_file))
                        if mode == "known_hosts_file":
                            known_hosts += known_hosts_lines(name, node["ssh_pub_key"])
                    except HostKeyError as error:
                        display.warning(f"teuthology.lab.locks: node {name} is listed unpinned: its recorded host key is invalid: {error}")
            for key, value in hostvars.items():
                inventory.set_variable(name, key, value)
            if any(constructed):
                compose, composed_groups, keyed_groups = constructed
                self._set_composite_vars(compose, hostvars, name, strict=strict)
                self._add_host_to_composed_groups(composed_groups, hostvars, name, strict=strict)
                self._add_host_to_keyed_groups(keyed_groups, hostvars, name, strict=strict)
        if mode == "known_hosts_file":
            _write_atomically(known_hosts_file, "".join(line + "\n" for line in known_hosts))


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _unfit_address(node):
    """Why the node's name or ssh_host cannot be the host ssh is given, or None.

    The node module refuses such values; this catches rows written past it, which
    would otherwise reach ssh's command line (an ssh_host of -oProxyCommand=...).
    """
    for field in ("name", "ssh_host") if node["ssh_host"] else ("name",):
        try:
            check_host(node[field])
        except HostKeyError as error:
            return f"its {field} {error}"
    return None


def _write_atomically(path, content):
    """Readers see the old file or the new one, never half of it."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".known_hosts.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
