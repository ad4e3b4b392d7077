#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: downburst
short_description: Create or destroy a node's VM with downburst, on its vpshost
description:
  - Runs L(downburst,https://github.com/ceph/downburst) on the host it runs on (a node's vpshost, reached with
    C(delegate_to)) to install a fresh VM for a C(vps) node, or to destroy it.
  - Finds the executable in this order; O(executable); C(downburst) on C(PATH); C(src/downburst/virtualenv/bin/downburst)
    under the SSH user's home, then under C(/home/ubuntu) and C(/home/teuthology). None found, it fails naming every
    place it looked at.
  - Hands downburst its meta-data and user-data as anonymous files in memory (C(memfd_create)), which downburst opens
    as C(/dev/fd/N). They are never written to the vpshost's disk, and they are gone when downburst and the module end,
    even when killed. Runs C(downburst -c URI create --wait [--nokey] --meta-data=/dev/fd/N --user-data=/dev/fd/N SHORTNAME)
    as an argument vector.
  - A create that fails because a VM of that name already exists (a leftover) destroys it and tries again, at most
    O(retries) times. If that destroy fails, the module fails saying so, with the destroy's exit code, error and
    command line.
  - A failed create is not cleaned up here (downburst leaves the VM); the role M(teuthology.lab.downburst) destroys it.
  - Gives the VM the user-data teuthology gives it, C(user=O(user)) (the image's default user gets that name, the
    meta-data's public keys and sudo) and C(manage_etc_hosts=true), and the meta-data C(local-hostname) the node's name.
  - While a create runs, downburst runs in a process group of its own, recorded in a file under
    C(~/.cache/teuthology-lab/downburst) on the host it runs on. O(state=absent) first ends a create of that VM that
    still runs there (a run killed or cancelled mid-create leaves one; SIGTERM to its process group, SIGKILL 10 s later),
    so that no VM appears after the destroy; then it runs C(downburst -c URI destroy SHORTNAME). A VM that is already
    gone is not an error.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
options:
  node:
    description:
      - The node, as a dict returned by M(teuthology.lab.lock) or M(teuthology.lab.node_info). Uses C(name)
        (the VM is named by its first label), C(os_type), C(os_version), C(arch) and C(mac_address).
    type: dict
    required: true
  state:
    description: V(present) creates a fresh VM; V(absent) destroys it.
    type: str
    choices: [present, absent]
    default: present
  executable:
    description: The downburst executable, instead of looking for it.
    type: path
  libvirt_uri:
    description:
      - The libvirt URI downburst connects to (C(-c)).
      - Or a URI alias, as teuthology runs downburst on its own host with C(-c VPSHOST_SHORTNAME); the alias must be in
        the user's C(~/.config/libvirt/libvirt.conf) or C(~/.libvirt/libvirt.conf), for root C(/etc/libvirt/libvirt.conf)
        (where libvirt reads C(uri_aliases); the playbook C(teuthology.lab.libvirt_aliases) writes them), else the module
        fails naming the files.
    type: str
    default: qemu:///system
  user:
    description: The VM's user, that the public keys log in as (cloud-config C(user)); teuthology's is V(ubuntu).
    type: str
    default: ubuntu
  cpus:
    description: Number of virtual CPUs.
    type: int
    default: 1
  ram:
    description: Memory, in downburst's units.
    type: str
    default: 3.8G
  disk_size:
    description: Size of the system disk.
    type: str
    default: 100G
  additional_disks:
    description: Number of additional disks.
    type: int
    default: 4
  additional_disks_size:
    description: Size of each additional disk.
    type: str
    default: 100G
  network:
    description: The libvirt network the node's MAC address is attached to (meta-data C(networks[].source)).
    type: str
    default: front
  public_keys:
    description: The SSH public keys that may log in to the VM (meta-data C(public-keys)).
    type: list
    elements: str
    default: []
  host_keys:
    description:
      - Host key pairs the VM must serve, by type (V(ed25519), V(ecdsa), V(rsa)), each a dict with C(private) and
        C(public); passed to cloud-init as C(ssh_keys) with C(ssh_deletekeys=true).
      - Never shown in output, and handed to downburst in memory only; but downburst writes the user-data, these
        private keys included, into the VM's cloud-init seed ISO (the volume C(cloud-init.SHORTNAME.iso) in the
        vpshost's libvirt storage pool), which stays until the VM is destroyed.
    type: dict
  fetch_default_key:
    description: Let downburst fetch the Sepia lab's default key from the internet (otherwise C(--nokey)).
    type: bool
    default: false
  extra_meta_data:
    description: More meta-data; its C(downburst) mapping is merged into downburst's settings, other keys are added.
    type: dict
    default: {}
  retries:
    description:
      - How many times a create that finds a leftover VM of the same name destroys it and tries again.
      - V(0) never destroys a leftover (the create fails). A negative value is an error, before anything runs.
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    description: A dry run; finds the executable and returns the commands it would run.
  diff_mode:
    support: none
    description: Returns no diff; check mode shows the commands and the meta-data instead.
requirements:
  - downburst on the vpshost, a Linux host (the meta-data and user-data are C(memfd_create) files)
notes:
  - Long creates should run with C(async) and C(poll), so that no SSH timeout cuts them.
seealso:
  - module: teuthology.lab.lock
"""

EXAMPLES = r"""
- name: Install a fresh VM for a locked node, on its vpshost
  teuthology.lab.downburst:
    node: "{{ node }}"
    public_keys: ["{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"]
  delegate_to: "{{ node.vpshost }}"
  async: 1800
  poll: 10

- name: Destroy it
  teuthology.lab.downburst:
    node: "{{ node }}"
    state: absent
  delegate_to: "{{ node.vpshost }}"
"""

RETURN = r"""
executable:
  description: The downburst that ran (or would run).
  returned: when found
  type: str
searched:
  description: Every place looked at for the executable, in order.
  returned: always
  type: list
  elements: str
commands:
  description: The command lines run (or, in check mode, to run), in order.
  returned: when found
  type: list
  elements: list
meta_data:
  description: The meta-data given to downburst.
  returned: with O(state=present)
  type: dict
creates:
  description: How many creates it took (more than one when leftover VMs were destroyed first).
  returned: with O(state=present)
  type: int
stderr:
  description: downburst's standard error of the last command.
  returned: when run
  type: str
ended_create:
  description: With O(state=absent), whether a create of this VM that still ran was ended first.
  returned: with O(state=absent), unless in check mode
  type: bool
rc:
  description: The exit code of the command that failed.
  returned: on failure of a downburst command
  type: int
command:
  description:
    - The create that failed, or the destroy of a leftover VM that failed, as a command line.
  returned: on failure of a create
  type: str
"""

import os
import shlex
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teuthology.lab.plugins.module_utils import downburst as downburst_utils


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "node": {"type": "dict", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "executable": {"type": "path"},
            "libvirt_uri": {"type": "str", "default": downburst_utils.DEFAULT_URI},
            "user": {"type": "str", "default": "ubuntu"},
            "cpus": {"type": "int", "default": 1},
            "ram": {"type": "str", "default": "3.8G"},
            "disk_size": {"type": "str", "default": "100G"},
            "additional_disks": {"type": "int", "default": 4},
            "additional_disks_size": {"type": "str", "default": "100G"},
            "network": {"type": "str", "default": "front"},
            "public_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
            "host_keys": {"type": "dict", "no_log": True},
            "fetch_default_key": {"type": "bool", "default": False},
            "extra_meta_data": {"type": "dict", "default": {}},
            "retries": {"type": "int", "default": 3},
        },
        supports_check_mode=True,
    )
    params = module.params
    node = params["node"]
    home = str(Path.home())
    result: dict = {"searched": []}
    try:
        name = downburst_utils.shortname(str(node.get("name", "")))
        uri = downburst_utils.check_uri(params["libvirt_uri"])
        if "://" not in uri:
            downburst_utils.libvirt_alias(uri, home, root=os.geteuid() == 0)
        downburst_utils.check_retries(params["retries"])
        executable, result["searched"] = downburst_utils.find_executable(params["executable"], module.get_bin_path, home)
        result["executable"] = executable
        if params["state"] == "present":
            meta = downburst_utils.meta_data(
                hostname=str(node["name"]),
                os_type=node.get("os_type"),
                os_version=node.get("os_version"),
                arch=node.get("arch"),
                mac_address=node.get("mac_address"),
                network=params["network"],
                cpus=params["cpus"],
                ram=params["ram"],
                disk_size=params["disk_size"],
                additional_disks=params["additional_disks"],
                additional_disks_size=params["additional_disks_size"],
                public_keys=params["public_keys"],
                extra=params["extra_meta_data"],
            )
            user = downburst_utils.user_data(params["user"], params["host_keys"])
    except downburst_utils.DownburstError as error:
        module.fail_json(msg=f"{node.get('name')}: {error}", **result)

    record = downburst_utils.create_record(home, uri, name)

    def run(argv: list[str], pass_fds: tuple[int, ...] = (), record: str | None = None) -> tuple[int, str]:
        result.setdefault("commands", []).append(argv)
        rc, err = downburst_utils.run_downburst(argv, pass_fds, record)
        result["stderr"] = err
        return rc, err

    if params["state"] == "absent":
        argv = downburst_utils.destroy_argv(executable, uri, name)
        if module.check_mode:
            module.exit_json(changed=True, commands=[argv], **result)
        result["ended_create"] = downburst_utils.end_running_create(record)
        rc, err = run(argv)
        if rc != 0:
            module.fail_json(msg=f"{node['name']}: downburst destroy failed: {' '.join(downburst_utils.error_lines(err))}", rc=rc, **result)
        module.exit_json(changed=result["ended_create"] or not downburst_utils.was_absent(err), **result)

    result["meta_data"] = meta
    # In memory, not in files: the user-data may hold private host keys, and a create killed at its
    # async timeout could not remove a file; these go with the last process holding them.
    files = (
        downburst_utils.memory_file("meta-data", downburst_utils.meta_data_text(meta)),
        downburst_utils.memory_file("user-data", downburst_utils.user_data_text(user)),
    )
    meta_file, user_file = (f"/dev/fd/{fd}" for fd in files)
    argv = downburst_utils.create_argv(executable, uri, name, meta_file, user_file, params["fetch_default_key"])
    if module.check_mode:
        module.exit_json(changed=True, commands=[argv], **result)
    destroy = downburst_utils.destroy_argv(executable, uri, name)
    outcome = downburst_utils.create_with_retries(
        lambda command: run(command, files, record if command is argv else None), argv, destroy, params["retries"]
    )
    result["creates"] = outcome.creates
    if outcome.rc != 0:
        module.fail_json(msg=f"{node['name']}: {outcome.error(name)}", rc=outcome.rc, command=shlex.join(outcome.argv), **result)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
