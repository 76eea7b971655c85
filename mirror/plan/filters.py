"""Gitignore-style include/exclude rules (pathspec), matched against paths relative to SRC."""
from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import MirrorError


class Filter:
    """Excludes are gitignore patterns; includes re-include what an exclude matched.

    As in a .gitignore whose lines are the excludes followed by `!include` lines, and as git
    applies it while walking: each entry is matched on its own (a pattern ending in "/" only
    matches folders), the last matching pattern wins, and nothing below an excluded folder is
    looked at, so it cannot be re-included.
    """

    def __init__(self, excludes: Iterable[str] = (), includes: Iterable[str] = ()) -> None:
        self.rules: list[tuple[object, bool, bool]] = []
        for line, excluded in [*((p, True) for p in excludes), *((p, False) for p in includes)]:
            if line.startswith("!"):  # "!x" given to --exclude includes, as in a .gitignore file
                line, excluded = line[1:], not excluded
            if not line.strip() or line.startswith("#"):
                continue
            import pathspec  # only when there are patterns: it costs start-up time
            try:
                spec = pathspec.PathSpec.from_lines("gitignore", [line])
            except (ValueError, TypeError) as error:
                raise MirrorError(f"bad filter pattern {line!r}: {error}") from None
            self.rules.append((spec, excluded, line.rstrip().endswith("/")))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excludes(self, path: bytes, is_dir: bool) -> bool:
        if not self.rules:
            return False
        text = os.fsdecode(path) + ("/" if is_dir else "")
        result = False
        for spec, excluded, folders_only in self.rules:
            if (is_dir or not folders_only) and spec.match_file(text):
                result = excluded
        return result


def read_patterns(path: str) -> list[str]:
    """The patterns of an --exclude-from file: one a line, blank lines and # comments skipped."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            return [line.rstrip("\n") for line in lines if line.strip() and not line.startswith("#")]
    except OSError as error:
        raise MirrorError(f"cannot read --exclude-from file {path!r}: {error.strerror}") from None
