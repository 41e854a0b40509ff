"""Signals of a run: SIGINT / SIGTERM only set a flag and write to the loop's wake-up pipe.

The loop (runner.manager.run) then stops: a first signal stops the hand-out and TERMs every running
task tree (KILL after --grace); a second one kills at once.
"""

from __future__ import annotations

import signal


class Signals:
    """The signals received and not yet handled by the loop."""

    def __init__(self):
        self._received: list[int] = []  # signal numbers, in order; appended by the handler, taken by the loop

    def install(self, wake_w: int) -> dict:
        """Handlers for SIGINT and SIGTERM; returns what they replaced, for restore()."""

        def on_signal(signum, frame):
            self._received.append(signum)

        old: dict = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
        old["wakeup"] = signal.set_wakeup_fd(wake_w)
        return old

    def restore(self, old: dict) -> None:
        signal.set_wakeup_fd(old.pop("wakeup"))
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def take(self) -> list[int]:
        taken, self._received = self._received, []
        return taken
