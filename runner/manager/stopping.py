"""Stopping a run: SIGINT/SIGTERM set a flag through the wake-up pipe; the loop then drains or kills.

Part of runner.manager.run.Run (a mixin). A first signal stops the hand-out and TERMs every running
task tree (KILL after --grace); a second one kills at once.
"""

from __future__ import annotations

import signal
import time

from runner.agents.messages import Cancel
from runner.manager.outcomes import _killpg


class Stopping:
    """Signal handling and the two ways a run stops (mixed into Run)."""

    # -- signals --------------------------------------------------------------------------------------

    def _install_signals(self, wake_w: int):
        def on_signal(signum, frame):
            self._signals.append(signum)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
        old["wakeup"] = signal.set_wakeup_fd(wake_w)
        return old

    def _restore_signals(self, old) -> None:
        signal.set_wakeup_fd(old.pop("wakeup"))
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _on_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if self.interrupted_by is None:
                self.interrupted_by = signum
                self._begin_stop(f"{signal.Signals(signum).name} received")
            else:
                self._kill_now()

    def _begin_stop(self, why: str) -> None:
        """Hand out nothing more; TERM every running task tree, KILL after the grace period."""
        self.reporter.message(f"{why}: stopping; running tasks get {self.opt.grace:g}s to exit (again to stop now)")
        self.sched.stop()
        wall = time.time()
        for task_id in self.sched.drain_changes():
            self._note_change(task_id, wall)
        for agent_id in list(self.pool.reservations):
            self.backend.send(agent_id, Cancel(self.opt.grace))
        self._stop_deadline = time.monotonic() + self.opt.grace + 1.0

    def _kill_now(self) -> None:
        for row in list(self.pool.agents.values()):
            if row.state == "busy":
                task_pid = row.task_pid or self.backend.task_pid(row.id)
                if task_pid:
                    _killpg(task_pid)
                self.backend.kill(row.id)
