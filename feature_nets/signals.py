"""Holding Ctrl-C (SIGINT) and SIGTERM back while a few lines run that must happen all together or not at all.

Used where an interruption halfway would leave state that matches neither before nor after: the benchmark's
renames of its finished outputs into place, a training step's optimiser update with the counters that record it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["signals_held"]


@contextlib.contextmanager
def signals_held(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT/SIGTERM back while the block runs (main thread only), then deliver the first one received.

    The signal is raised again once the previous handlers are back, so Ctrl-C becomes the usual
    ``KeyboardInterrupt`` right after the block, never inside it. Outside the main thread (where Python delivers no
    signals) the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])
