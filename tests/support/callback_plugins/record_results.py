"""Writes every task result of a run to the JSON-lines file named by
TLAB_RESULTS, so tests assert on what Ansible really returned; with the
task's start and the result's arrival time, so benchmarks see where time goes."""

from __future__ import annotations

import json
import os
import time

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: record_results
type: aggregate
short_description: test helper, records task results as JSON lines
description: Writes each task result to the file named by the environment variable TLAB_RESULTS.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._task_started = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._task_started = time.time()

    def _write(self, status: str, result) -> None:
        path = os.environ.get("TLAB_RESULTS")
        if not path:
            return
        entry = {"task": result.task_name, "host": result._host.get_name(), "status": status, "result": result._result,
                 "started": self._task_started, "finished": time.time()}
        with open(path, "a") as f:
            f.write(json.dumps(entry, cls=AnsibleJSONEncoder) + "\n")

    def v2_runner_on_ok(self, result) -> None:
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._write("failed", result)

    def v2_runner_on_skipped(self, result) -> None:
        self._write("skipped", result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._write("unreachable", result)
