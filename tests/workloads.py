"""Python callables the tests run inside agents (`call: workloads:spin`)."""

from __future__ import annotations

import time


def spin(seconds: float) -> dict:
    """Burn `seconds` of this process's CPU time; returns when (wall clock) it started and ended, and its pid."""
    import os

    start = time.time()
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return {"start": start, "end": time.time(), "pid": os.getpid()}


def hang() -> None:
    """Never returns: for callable timeouts."""
    while True:
        time.sleep(3600)


def quick(i: int = 0) -> int:
    """A no-op with a result: for chunks of quick callables."""
    return i


def die_unless(marker: str) -> str:
    """Returns at once when marker exists; otherwise creates it and kills this agent (mid-chunk)."""
    import os

    if os.path.exists(marker):
        return "ok"
    open(marker, "w").close()
    os._exit(9)
