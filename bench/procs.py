"""Child processes of the benchmarks: stopping a server or worker, ending a stand-in model fed on stdin."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any], timeout_s: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def end_child(child: subprocess.Popen[Any], timeout_s: float = 30) -> None:
    """Close the stdin a child serves until (``--serve-llm``), then wait for it."""
    if child.stdin is not None:
        child.stdin.close()
    child.wait(timeout=timeout_s)
