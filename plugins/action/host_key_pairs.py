# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""teuthology.lab.host_key_pairs: fresh SSH host key pairs, made in the
controller's memory (documented in plugins/modules/host_key_pairs.py)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import (
    DEFAULT_TYPES,
    generate_host_key_pairs,
    normalize_host_keys,
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # Nothing runs on the target: the keys are made here and never written to a file.
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        _validation, args = self.validate_argument_spec(
            argument_spec={"types": {"type": "list", "elements": "str", "choices": list(DEFAULT_TYPES),
                                     "default": list(DEFAULT_TYPES)}},
        )
        result = super().run(tmp, task_vars)
        # The argument spec's choices have refused any type generate_host_key_pairs does not know.
        pairs = generate_host_key_pairs(args["types"])
        public = normalize_host_keys("\n".join(pair["public"] for pair in pairs.values()))
        return {**result, "changed": False, "host_key_pairs": pairs, "ssh_pub_key": public}
