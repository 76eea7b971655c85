"""--log-file: append one line per action and the summary, reopened every run (logrotate-safe)."""
from __future__ import annotations

import os
import time

from ..errors import MirrorError
from ..run.events import Event, Finished, Noticed
from ..model import display
from .summary import describe_outcome


class LogFile:
    def __init__(self, path: str) -> None:
        try:
            self.stream = open(path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        except OSError as error:
            raise MirrorError(f"cannot open --log-file {path}: {error.strerror}") from None
        self.tag = f"mirror[{os.getpid()}]"

    def write(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.stream.write(f"{stamp} {self.tag} {text}\n")

    def __call__(self, event: Event) -> None:
        if isinstance(event, Finished):
            line = describe_outcome(event.outcome)
            if line:
                self.write(line)
        elif isinstance(event, Noticed):
            problem = event.problem
            self.write(f"{problem.severity.value}: {display(problem.path)}: {problem.message}")

    def close(self) -> None:
        self.stream.close()
