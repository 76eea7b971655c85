"""Gitignore-style include/exclude rules (pathspec), matched against paths relative to SRC."""
from __future__ import annotations

import os
from collections.abc import Iterable

import pathspec

from ..errors import MirrorError


class Filter:
    """Excludes are gitignore patterns; includes re-include what an exclude matched.

    Exactly as in a .gitignore whose lines are the excludes followed by `!include` lines: the
    last matching pattern wins, and nothing below an excluded folder can be re-included.
    """

    def __init__(self, excludes: Iterable[str] = (), includes: Iterable[str] = ()) -> None:
        lines = [*excludes, *(f"!{pattern}" for pattern in includes)]
        try:
            self.spec = pathspec.GitIgnoreSpec.from_lines(lines) if lines else None
        except (ValueError, TypeError) as error:
            raise MirrorError(f"bad filter pattern: {error}") from None

    def __bool__(self) -> bool:
        return self.spec is not None

    def excludes(self, path: bytes, is_dir: bool) -> bool:
        if self.spec is None:
            return False
        text = os.fsdecode(path)
        return self.spec.match_file(text + "/" if is_dir else text)


def read_patterns(path: str) -> list[str]:
    """The patterns of an --exclude-from file: one a line, blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            return [line.rstrip("\n") for line in lines if line.strip() and not line.startswith("#")]
    except OSError as error:
        raise MirrorError(f"cannot read --exclude-from file {path!r}: {error.strerror}") from None
