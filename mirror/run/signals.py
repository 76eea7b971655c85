"""The master's stop signals while a run goes: SIGTERM and SIGHUP become an exception."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import arm_stop_signals, raise_stop


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM, and SIGHUP unless the program has its own use for it, into an exception in
    the master, so the run can stop cleanly; the command line's handlers drop them once the
    work is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [signal.SIGTERM] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) is signal.SIG_DFL)
    previous = {signum: signal.signal(signum, raise_stop) for signum in wanted}
    arm_stop_signals(True)
    try:
        yield
        arm_stop_signals(False)  # a stop now would only cut the summary short
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

