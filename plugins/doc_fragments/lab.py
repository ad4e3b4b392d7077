# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every teuthology.lab module shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  db:
    description:
      - The lock database, as a SQLAlchemy URL.
      - V(sqlite:////path/to/lab.db) for an embedded SQLite file, V(postgresql+psycopg://user:password@host/dbname) for a
        shared PostgreSQL database.
      - If not set, the environment variable E(TEUTHOLOGY_LAB_DB) is used; if that is not set either, the embedded file
        C(~/.local/share/teuthology-lab/lab.db) (its directory is created on first use).
      - Instead of a URL, this option or E(TEUTHOLOGY_LAB_DB) may be the absolute path of a file that holds the URL
        (what the AWX credential type injects, so that no password is in a job's environment).
      - The schema is created on first use. The value is never shown in output, errors or returns, since it may hold a
        password.
      - Set it once for a play with C(module_defaults) and the action group C(group/teuthology.lab.lab).
    type: str
requirements:
  - SQLAlchemy >= 2.0
  - psycopg >= 3.1 (for PostgreSQL)
"""

    OWNER = r"""
options:
  owner:
    description:
      - Who acts, as recorded in the lock database and its history.
      - If not set, the environment variable E(TEUTHOLOGY_LAB_OWNER); if that is not set either, C(USER@HOSTNAME) of
        the machine running the module, as teuthology does.
      - Letters, digits and C(. - _ @ +).
    type: str
"""
