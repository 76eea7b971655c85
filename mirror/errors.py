"""Errors that stop a run, and the stop signals (SIGINT, SIGTERM, SIGHUP) that become exceptions."""
from __future__ import annotations

# _signal is the C module under `signal`, loaded with the interpreter: the command line sets
# its handlers before it imports anything (signal's enums cost 7 ms, long enough for a Ctrl-C).
import _signal
import posix as _posix  # os's C half, loaded with the interpreter like _signal

STOP_SIGNALS = frozenset({_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP})
_stopping = False  # a stop signal was raised, or the work is done: stop signals are dropped
_held = False      # the master is taking in a report: a stop waits until it is counted
_pending = 0       # the stop signal that waits
_swallowed = 0     # a stop signal raised where Python drops exceptions (see take_stop)
_owner = _posix.getpid()  # the process whose stop signals raise_stop turns into Terminated


class MirrorError(Exception):
    """A usage or setup error: bad options, a missing SRC, overlapping trees (exit 2)."""

    exit_code = 2


class LockHeld(MirrorError):
    """Another mirror run holds the lock on DST (exit 3)."""

    exit_code = 3


class Interrupted(Exception):
    """The run was stopped by a signal; `report` holds what was done until then."""

    def __init__(self, signum: int, report: object) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.report = report

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Terminated(BaseException):
    """Raised in the master by SIGTERM and SIGHUP, and in the command line by SIGINT too (the
    library leaves SIGINT to KeyboardInterrupt): a BaseException, so no `except Exception` and
    none of typer's handlers takes it on its way to the run's clean stop."""

    def __init__(self, signum: int = _signal.SIGTERM) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def signal_number(stop: BaseException) -> int:
    """The signal behind a Terminated or a KeyboardInterrupt."""
    return stop.signum if isinstance(stop, Terminated) else _signal.SIGINT


def raise_stop(signum: int, frame: object) -> None:
    """Signal handler: the first stop signal raises Terminated. Later ones are dropped, so that
    a second Ctrl-C cannot cut short the clean-up and the summary the first one started (the
    workers' stop is bounded: SIGKILL after a few seconds)."""
    global _stopping, _pending, _swallowed
    if _posix.getpid() != _owner:  # a helper forked before it set its own handlers: stop it
        _posix._exit(128 + signum)
    if _stopping:
        return
    if _held:
        _pending = signum
        return
    _stopping = True
    _swallowed = signum  # until it is seen to arrive: raised inside a finalizer or a weakref
    raise Terminated(signum)  # callback, Python prints it and drops it ("Exception ignored")


def take_stop() -> int:
    """The stop signal whose exception may have been swallowed on its way, or 0. The runner
    asks between reports: a Terminated that arrived has already ended its loop, so one it
    still sees was dropped, and it raises it again."""
    global _swallowed
    signum, _swallowed = _swallowed, 0
    return signum


class HeldStop:
    """While the master takes in a worker's report, a stop signal waits: raised in the middle,
    it would drop the rest of the report, and entries in place would go uncounted."""

    def __enter__(self) -> None:
        global _held
        _held = True

    def __exit__(self, *exc: object) -> None:
        global _held, _pending
        _held = False
        if _pending:
            signum, _pending = _pending, 0
            raise_stop(signum, None)


def arm_stop_signals(armed: bool) -> None:
    """True when a run starts: its first stop signal raises. False when its work is done: a stop
    then would only cut its summary short. The process that arms them is theirs (a library
    caller may itself be a forked process)."""
    global _stopping, _owner
    _stopping = not armed
    if armed:
        _owner = _posix.getpid()


def drop_stop_signals() -> None:
    """The command's work is over: from now on a stop signal changes nothing. Ignored, not left
    to raise_stop, which Python replaces by the default (death) as it exits."""
    arm_stop_signals(False)
    for signum in STOP_SIGNALS:
        if _signal.getsignal(signum) is raise_stop:
            _signal.signal(signum, _signal.SIG_IGN)


def catch_stop_signals() -> None:
    """The command line's first act: from here on, a stop signal ends the run cleanly. One
    ignored when we started stays ignored (nohup's SIGHUP, a background job's SIGINT)."""
    import sys
    global _owner
    _owner = _posix.getpid()
    for signum in STOP_SIGNALS:
        if _signal.getsignal(signum) != _signal.SIG_IGN:
            _signal.signal(signum, raise_stop)
    default_hook = sys.unraisablehook

    def quiet_about_stops(unraisable) -> None:  # a stop dropped there is raised again later
        if not isinstance(unraisable.exc_value, Terminated):
            default_hook(unraisable)
    sys.unraisablehook = quiet_about_stops


class HeldStops:
    """Stop signals held back while the helper processes start. They are blocked in this thread,
    so a process forked meanwhile starts with them blocked and takes them only once it has set
    its own handlers (copies of the master's would raise Terminated in it); and the master's
    Python handlers only note them (another thread, a progress bar's, may take the signal),
    until release() runs the first one, when the helpers can be stopped again."""

    def __init__(self) -> None:
        import threading
        self.noted: list[int] = []
        self.released = False
        self.handlers: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                handler = _signal.getsignal(signum)
                if callable(handler):  # SIG_DFL and SIG_IGN act in the kernel: the mask holds them
                    self.handlers[signum] = handler
                    _signal.signal(signum, self.note)
        self.mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, STOP_SIGNALS)

    def note(self, signum: int, frame: object) -> None:
        if not self.released:
            self.noted.append(signum)
        else:  # a release cut short by the signal it unblocked left this handler in place
            self.handlers[signum](signum, frame)

    def release(self) -> None:
        """Unblock and restore the handlers; a stop signal that came meanwhile raises here."""
        self.released = True
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self.mask)
        for signum, handler in self.handlers.items():
            _signal.signal(signum, handler)
        if self.noted:
            self.handlers[self.noted[0]](self.noted[0], None)


def describe(error: OSError) -> str:
    """One line for an OSError: its message and errno name, without Python's decoration."""
    import errno as errnos
    name = errnos.errorcode.get(error.errno or 0, "")
    text = error.strerror or str(error)
    return f"{text} ({name})" if name else text
