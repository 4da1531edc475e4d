"""Run a scenario in its own PID and mount namespace, so that a process scan sees only the
scenario's processes (never another QEMU of the host) and everything it started dies with it.

A scenario is a function ``module:function`` taking keyword arguments and returning what JSON
can carry; :func:`run_isolated` runs it as root under ``unshare --pid --fork --mount-proc`` and
returns its result. :data:`AS_NOBODY` prefixes a command to run it as the unprivileged
attacker (uid and gid 65534).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Prefix of a command run as nobody (uid 65534, no groups, no capabilities).
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")
_RESULT = "scenario-result: "


class ScenarioError(AssertionError):
    """The scenario failed or could not run; its output is in the message."""


def run_isolated(target: str, *, timeout: float = 120, **kwargs: Any) -> Any:
    """What ``target`` (``module:function``) returned for ``kwargs``, run in a new PID and
    mount namespace as root. Fails loudly where that cannot be done."""
    if os.geteuid() != 0:
        raise ScenarioError("scenarios in a PID namespace need root (unshare, setpriv)")
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            raise ScenarioError(f"{tool} (util-linux) is required")
    argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", __name__]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [*argv, target, json.dumps(kwargs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :])
    raise ScenarioError(
        f"{target} returned nothing (exit {done.returncode})\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )


def _main(target: str, arguments: str) -> None:
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)(**json.loads(arguments))
    print(_RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
