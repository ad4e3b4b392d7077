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
  - Asks one type at a time, each up to O(attempts) times; right after a boot, one C(ssh-keyscan) asking for several
    types can stall on one of them until its timeout and come back without that key.
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
  attempts:
    description: Once the host answers, how many times each type it has not answered for yet is asked (at least 1).
    type: int
    default: 3
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
cmds:
  description: The ssh-keyscan command lines run, in order (one type each).
  returned: always
  type: list
  elements: list
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import HostKeyError, check_host, scan_host_keys


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 22},
            "types": {"type": "list", "elements": "str", "choices": ["ed25519", "ecdsa", "rsa"], "default": ["ed25519", "ecdsa", "rsa"]},
            "timeout": {"type": "int", "default": 10},
            "wait": {"type": "int", "default": 0},
            "attempts": {"type": "int", "default": 3},
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
    if params["attempts"] < 1:
        module.fail_json(msg=f"attempts: {params['attempts']} is not a number of attempts (at least 1)")
    try:
        keys, cmds = scan_host_keys(
            module.run_command, host, params["port"], params["types"], params["timeout"], params["wait"], params["attempts"]
        )
    except HostKeyError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=False, ssh_pub_key=keys, keys=keys.splitlines(), cmds=cmds)


if __name__ == "__main__":
    main()
