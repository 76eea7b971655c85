"""Gitignore-style include/exclude rules (pathspec), matched against paths relative to SRC."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from ..errors import MirrorError


class Filter:
    """Excludes are gitignore patterns; includes re-include what an exclude matched.

    As in a .gitignore whose lines are the excludes followed by `!include` lines, and as git
    applies it while walking: each entry is matched on its own, never because a folder above it
    matches (the walker does not go into an excluded folder, so nothing there can be included
    again); a pattern ending in "/" only matches folders; the last matching pattern wins.
    """

    def __init__(self, excludes: Iterable[str] = (), includes: Iterable[str] = ()) -> None:
        # (match, excluded, folders only), last pattern first: the first one that matches decides
        self.rules: list[tuple[Callable[[str], object], bool, bool]] = []
        for pattern, excluded in [*((p, True) for p in excludes), *((p, False) for p in includes)]:
            rule = compile_rule(pattern, excluded)
            if rule is not None:
                self.rules.insert(0, rule)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excludes(self, path: bytes, is_dir: bool) -> bool:
        text = os.fsdecode(path)
        for match, excluded, folders_only in self.rules:
            if (is_dir or not folders_only) and match(text):
                return excluded
        return False


def compile_rule(pattern: str, excluded: bool) -> tuple[Callable[[str], object], bool, bool] | None:
    """One .gitignore line (an include is "!" + pattern) as a rule; None when it matches nothing."""
    line = pattern
    if excluded and line.startswith("#"):
        return None  # a comment, as in a .gitignore
    if excluded and line.startswith("!"):
        line, excluded = line[1:], False
    if line.startswith(("!", "#")):
        line = "\\" + line  # only a line's first "!" negates, and "!#x" is no comment: literal
    if not line.endswith("\\ "):
        line = line.rstrip()  # pathspec's rule for trailing spaces, before the "/" is looked at
    folders_only = line.endswith("/")
    if folders_only:
        # As git does: drop the "/" and match the rest against folders. (Given the "/", pathspec
        # reads "a/**/" as "a/", which matches a itself.) The space that ended up last is part of
        # the name ("a /" is folder "a "): escaped, so that pathspec does not trim it.
        line = line[:-1]
        if line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1] + "\\ "
    import re

    from pathspec.patterns.gitignore import GitIgnorePatternError  # only when there are patterns:
    from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern  # it costs start-up time
    try:
        regex = GitIgnoreSpecPattern(line).regex
    except GitIgnorePatternError as error:
        raise MirrorError(f"bad filter pattern '{pattern}': {error.__cause__ or error}") from None
    except re.error as error:
        raise MirrorError(f"bad filter pattern '{pattern}': {error.msg}") from None
    if regex is None:
        return None  # blank, "/" or an unclosed "[", which git never matches either
    # The group ps_d ends a match at a "/" below the matched name: pathspec's way of matching
    # what is inside a matched folder. A path matches itself only when the whole of it does, so
    # such patterns must fullmatch. The others ("a/**", "*", "*/**" whose regex is a bare "/")
    # say what lies below on their own, and are searched, as pathspec does.
    match = regex.fullmatch if "ps_d" in regex.groupindex else regex.search
    return match, excluded, folders_only

