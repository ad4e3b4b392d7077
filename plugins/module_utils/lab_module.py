# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base of every teuthology.lab module: the common arguments, the
database handle and one way to fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import (
    DB_ENV,
    HAS_SQLALCHEMY,
    OWNER_ENV,
    SQLALCHEMY_IMPORT_ERROR,
    Lab,
    LabError,
    default_owner,
)

# ``db`` may carry a password: no_log keeps it out of every output.
DB_ARGUMENT_SPEC: dict[str, Any] = {"db": {"type": "str", "no_log": True, "fallback": (env_fallback, [DB_ENV])}}
# Who acts: the lock holder, or the admin named in the history.
OWNER_ARGUMENT_SPEC: dict[str, Any] = {"owner": {"type": "str", "fallback": (env_fallback, [OWNER_ENV])}}


class LabModule(AnsibleModule):
    """An AnsibleModule with the ``db`` argument and the lock database behind it."""

    def __init__(self, argument_spec: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(argument_spec={**DB_ARGUMENT_SPEC, **argument_spec}, **kwargs)
        if not HAS_SQLALCHEMY:
            self.fail_json(msg=missing_required_lib("SQLAlchemy"), exception=SQLALCHEMY_IMPORT_ERROR)

    @property
    def owner(self) -> str:
        return self.params.get("owner") or default_owner()

    def run(self, action: Callable[[Lab], dict[str, Any]], read_only: bool = False) -> NoReturn:
        """Open the database (check mode rolls writes back), run ``action``
        and exit with its result; a LabError fails the task, nothing changed.
        A ``read_only`` action, like check mode, never creates the database."""
        try:
            lab = Lab(self.params["db"], check_mode=self.check_mode, create=not read_only)
            try:
                result = action(lab)
            finally:
                lab.close()
        except LabError as error:
            self.fail_json(msg=str(error))
        self.exit_json(**result)
