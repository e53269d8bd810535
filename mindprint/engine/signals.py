"""SIGTERM/SIGINT (SLURM preemption, Ctrl-C) turned into a checkpoint at the next safe point."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Optional


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived; the run saved a checkpoint at a safe point and stops."""

    def __init__(self, signum: int, iteration: int, path: Optional[Path]):
        super().__init__(f"{signal.Signals(signum).name} at iteration {iteration}; checkpoint: {path}")
        self.signum, self.iteration, self.path = signum, iteration, path


class StopSignals:
    """Turns the first SIGTERM/SIGINT (SLURM preemption, Ctrl-C) into a flag read between iterations.

    A second signal of the same kind gets the default behaviour, so a stuck run can still be killed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.received = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
