"""Signals held back while work that must not be cut short runs (torch-free)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def deferred_signals(*signums: int) -> Iterator[Callable[[], int]]:
    """While inside, ``signums`` are noted (the yielded function gives the first one's number,
    0 while none came) instead of acting, and their handlers come back on leaving. Outside
    the main thread signals cannot be caught: none is ever noted."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in signums}
    try:
        yield lambda: received[0] if received else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
