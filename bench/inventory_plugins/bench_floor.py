# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The floor of bench/inventory_scale.py: a bare inventory plugin that adds
hosts, groups and variables from a list it already holds (read from a JSON
file), so its time is Ansible's own cost of holding the inventory."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_floor
short_description: Benchmark floor, hosts and variables from a prepared list
description: Adds the hosts, groups and variables of a prepared JSON file, nothing else.
options:
  plugin:
    description: The name of this plugin.
    required: true
    choices: [bench_floor]
  data:
    description: JSON file with a list of {name, groups, vars}.
    required: true
    type: path
"""

import json

from ansible.plugins.inventory import BaseInventoryPlugin


class InventoryModule(BaseInventoryPlugin):
    NAME = "bench_floor"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith("floor.yml")

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        with open(self.get_option("data")) as f:
            hosts = json.load(f)
        groups = set()
        for host in hosts:
            name = host["name"]
            inventory.add_host(name)
            for group in host["groups"]:
                if group not in groups:
                    inventory.add_group(group)
                    groups.add(group)
                inventory.add_child(group, name)
            for key, value in host["vars"].items():
                inventory.set_variable(name, key, value)
