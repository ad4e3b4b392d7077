#!/usr/bin/python
# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_domains
short_description: List the libvirt domains of a vpshost
description:
  - Runs C(virsh -c URI list --all --name) on the host it runs on (a vpshost, reached with C(delegate_to) or as a play
    host) and returns the names of every domain defined there, running or not. One listing per vpshost, whatever the
    number of slots.
  - The reaper (playbook C(teuthology.lab.reap)) compares them with the lock database.
  - With a URI alias instead of a URI (as teuthology runs downburst, C(-c VPSHOST_SHORTNAME)), runs where the alias is
    defined, normally the controller.
version_added: 0.1.0
author: teuthology.lab contributors (@teuthology-lab)
options:
  libvirt_uri:
    description: The libvirt URI (C(-c)), or a URI alias of the user's libvirt client configuration.
    type: str
    default: qemu:///system
attributes:
  check_mode:
    support: full
    description: Listing changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
requirements:
  - virsh (libvirt's client) where the module runs
seealso:
  - module: teuthology.lab.reap
"""

EXAMPLES = r"""
- name: List the domains of a vpshost
  teuthology.lab.vm_domains:
  delegate_to: mira001.front.sepia.ceph.com
  register: listed
"""

RETURN = r"""
domains:
  description: The names of the domains defined on the host, sorted.
  returned: success
  type: list
  elements: str
  sample: [vpm001, vpm002]
cmd:
  description: The virsh command line run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.teuthology.lab.plugins.module_utils.downburst import DownburstError, check_uri
from ansible_collections.teuthology.lab.plugins.module_utils.reaper import parse_domain_list


def main() -> None:
    module = AnsibleModule(
        argument_spec={"libvirt_uri": {"type": "str", "default": "qemu:///system"}},
        supports_check_mode=True,
    )
    try:
        uri = check_uri(module.params["libvirt_uri"])
    except DownburstError as error:
        module.fail_json(msg=str(error))
    argv = [module.get_bin_path("virsh", required=True), "-c", uri, "list", "--all", "--name"]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg=f"virsh could not list the domains of {uri}: {err.strip()}", rc=rc, cmd=argv)
    try:
        domains = parse_domain_list(out)
    except ValueError as error:
        module.fail_json(msg=str(error), cmd=argv)
    module.exit_json(changed=False, domains=domains, cmd=argv)


if __name__ == "__main__":
    main()
