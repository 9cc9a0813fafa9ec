"""Running the stock commands the way a user types them: in a subprocess of this environment, with the
output kept in a log and chosen lines echoed as progress (shared by the demo and the benchmark)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Callable, List, Optional


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message is one line naming the log."""


def bin_path(name: str) -> str:
    """A console script of this environment (nnUNetv2_train, nnunetv2-oneshot, ...): beside the interpreter
    (a venv or conda env), else the one on PATH (``pip install --user`` puts scripts in ~/.local/bin)."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.isfile(here) else (shutil.which(name) or here)


def run_logged(cmd: List[str], env: dict, log_file: str, echo: Optional[Callable[[str], None]] = None,
               append: bool = False) -> float:
    """Runs ``cmd`` with stdout+stderr into ``log_file`` (the command line first), passing every line to
    ``echo``. Returns the wall time in seconds; raises ``CommandFailed`` on a non-zero exit."""
    t = time.time()
    with open(log_file, "a" if append else "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            log.write(line)
            if echo is not None:
                echo(line)
        if p.wait() != 0:
            raise CommandFailed(f"{os.path.basename(cmd[0])} failed (exit {p.returncode}); full log: {log_file}")
    return time.time() - t
