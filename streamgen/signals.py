"""Signals held back while work that must not be cut short runs (torch-free)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def deferred_signals(*signums: int) -> Iterator[Callable[[], bool]]:
    """While inside, ``signums`` set a flag (the yielded function reads it) instead of acting,
    and their handlers come back on leaving. Outside the main thread signals cannot be
    caught: the flag stays unset."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in signums}
    try:
        yield lambda: bool(received)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
