#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: keyscan
short_description: Scan a node's SSH host keys, every type it serves
description:
  - Runs C(ssh-keyscan) for every host key type OpenSSH serves by default and returns the keys, validated and
    normalized as M(teuthology.lab.node) records them (one C(TYPE BASE64) line each).
  - Optionally waits until the host answers, for a machine that is still booting.
  - Changes nothing; record the result with M(teuthology.lab.node) and O(teuthology.lab.node#module:ssh_pub_key).
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
options:
  host:
    description: The address to scan (a node's C(ssh_host), else its name).
    type: str
    required: true
  port:
    description: The SSH port.
    type: int
    default: 22
  types:
    description: The key types to ask for.
    type: list
    elements: str
    choices: [ed25519, ecdsa, rsa]
    default: [ed25519, ecdsa, rsa]
  timeout:
    description: Seconds C(ssh-keyscan) waits for one connection (C(-T)).
    type: int
    default: 10
  wait:
    description: Keep trying for this many seconds until the host answers with at least one key. V(0) tries once.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Scanning changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
requirements:
  - the OpenSSH client (ssh-keyscan) where the module runs
seealso:
  - module: teuthology.lab.node
"""

EXAMPLES = r"""
- name: Scan a freshly installed VM, waiting for it to boot
  teuthology.lab.keyscan:
    host: 127.0.0.1
    port: 2201
    wait: 300
  register: scanned

- name: Record its keys
  teuthology.lab.node:
    name: vpm001.front.sepia.ceph.com
    ssh_pub_key: "{{ scanned.ssh_pub_key }}"
"""

RETURN = r"""
ssh_pub_key:
  description: The keys, one C(TYPE BASE64) line each.
  returned: success
  type: str
  sample: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...\necdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAA..."
keys:
  description: The same keys as a list.
  returned: success
  type: list
  elements: str
cmd:
  description: The ssh-keyscan command line that found them.
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import HostKeyError, check_host, keyscan_argv, parse_keyscan


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 22},
            "types": {"type": "list", "elements": "str", "choices": ["ed25519", "ecdsa", "rsa"], "default": ["ed25519", "ecdsa", "rsa"]},
            "timeout": {"type": "int", "default": 10},
            "wait": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        host = check_host(params["host"])
    except HostKeyError as error:
        module.fail_json(msg=f"host: {error}")
    if not 1 <= params["port"] <= 65535:
        module.fail_json(msg=f"port: {params['port']} is not a TCP port (1-65535)")
    argv = keyscan_argv(host, params["port"], params["timeout"], tuple(params["types"]))
    deadline = time.monotonic() + params["wait"]
    while True:
        rc, out, err = module.run_command(argv)
        if any(line and not line.startswith("#") for line in out.splitlines()):
            break
        if time.monotonic() >= deadline:
            message = f"{host} port {params['port']} served no SSH host key (waited {params['wait']} s): {err.strip()}"
            module.fail_json(msg=message, cmd=argv, rc=rc)
        time.sleep(1)
    try:
        keys = parse_keyscan(out)
    except HostKeyError as error:
        module.fail_json(msg=f"{host} port {params['port']} served an invalid host key: {error}", cmd=argv)
    module.exit_json(changed=False, ssh_pub_key=keys, keys=keys.splitlines(), cmd=argv)


if __name__ == "__main__":
    main()
