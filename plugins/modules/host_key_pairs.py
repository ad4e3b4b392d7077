#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The action plugin of the same name does the work, on the controller; this file holds its documentation.

from __future__ import annotations

DOCUMENTATION = r"""
module: host_key_pairs
short_description: Make fresh SSH host key pairs on the controller, in memory
description:
  - Generates one SSH host key pair for each type asked for, as C(ssh-keygen) makes them by default
    (ed25519, ecdsa P-256, rsa 3072), in the controller's memory; no file ever holds the private keys.
  - Used to give a new VM host keys that are known before it boots (cloud-init C(ssh_keys)), so that the first
    connection to it is already checked against a recorded key.
  - The result holds private keys; run the task with C(no_log=true) and pass the pairs only to where they are needed.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
options:
  types:
    description: The key types to make.
    type: list
    elements: str
    choices: [ed25519, ecdsa, rsa]
    default: [ed25519, ecdsa, rsa]
attributes:
  action:
    support: full
    description: Runs on the controller; no connection to the target is made.
  check_mode:
    support: full
    description: Making keys in memory changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
  platform:
    support: full
    platforms: all
    description: Runs on the controller (needs the Python C(cryptography) library, which ansible-core brings).
seealso:
  - module: teuthology.lab.node
  - module: teuthology.lab.downburst
"""

EXAMPLES = r"""
- name: Make host keys for a VM
  teuthology.lab.host_key_pairs:
  register: new_host_keys
  no_log: true

- name: Record their public keys before the VM boots
  teuthology.lab.node:
    name: vpm001.front.sepia.ceph.com
    ssh_pub_key: "{{ new_host_keys.ssh_pub_key }}"
"""

RETURN = r"""
host_key_pairs:
  description: The pairs by type; C(private) is the key in OpenSSH's PEM format, C(public) its C(TYPE BASE64) line.
  returned: success
  type: dict
  sample:
    ed25519:
      private: "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n-----END OPENSSH PRIVATE KEY-----\n"
      public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."
ssh_pub_key:
  description: The public keys, one C(TYPE BASE64) line each, sorted, as M(teuthology.lab.node) records them.
  returned: success
  type: str
  sample: "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAA...\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."
"""
