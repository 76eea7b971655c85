"""--log-file: append one line per action, the warnings, errors and summary; reopened every run."""
from __future__ import annotations

import os
import time

from ..errors import MirrorError
from ..model import Status, display
from ..events import Event, Finished
from .summary import describe_finished


class LogFile:
    def __init__(self, path: str) -> None:
        try:
            self.stream = open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError as error:
            shown = display(os.fsencode(path))
            raise MirrorError(f"cannot open --log-file {shown}: {error.strerror}") from None
        self.tag = f"mirror[{os.getpid()}]"

    def write(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.stream.write(f"{stamp} {self.tag} {text}\n")

    def __call__(self, event: Event) -> None:
        """Actions done; what failed is written once, by the session, as stderr says it."""
        if isinstance(event, Finished) and event.status is Status.DONE:
            line = describe_finished(event)
            if line:
                self.write(line)

    def close(self) -> None:
        self.stream.close()
