"""Filters give git's answers, path by path, as its walk sees them; a bad pattern stops a run first."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Dir, build, run_mirror, snapshot
from mirror.errors import MirrorError
from mirror.plan.filters import Filter

# No user or system config: a global core.excludesFile would add patterns of its own.
GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["git", "-C", os.fsdecode(repo), *args], input=data, env=GIT_ENV,
                          capture_output=True, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()  # check-ignore: 1 when nothing matched
    return done.stdout


def entries(root) -> dict[str, bool]:
    """Every path below root (relative, as str) -> whether it is a folder; git's own files left out."""
    found = {}
    for rel in snapshot(root, mtimes=False):
        if rel != b"." and rel.split(b"/")[0] not in (b".git", b".gitignore"):
            found[os.fsdecode(rel)] = os.path.isdir(os.path.join(os.fsencode(root), rel))
    return found


def git_ignored(tree, lines: list[str]) -> set[str]:
    """The paths of tree git ignores with `lines` as its .gitignore: matched themselves, or below
    an ignored folder (git check-ignore already answers so for them; the walk never goes there)."""
    with tempfile.TemporaryDirectory() as repo:
        shutil.copytree(tree, repo, symlinks=True, dirs_exist_ok=True)
        git(repo, "init", "-q", "--template=")
        Path(repo, ".gitignore").write_bytes(b"".join(os.fsencode(line) + b"\n" for line in lines))
        paths = sorted(entries(repo))  # a folder before what is in it
        fields = git(repo, "check-ignore", "--no-index", "-v", "-n", "-z", "--stdin",
                     data=b"".join(os.fsencode(p) + b"\0" for p in paths)).split(b"\0")
        # -v -n -z: source, line number, pattern ("!..." when it re-includes, "" when none), path
        matched = {os.fsdecode(fields[i + 3]) for i in range(0, len(fields) - 1, 4)
                   if fields[i + 2] and not fields[i + 2].startswith(b"!")}
        ignored: set[str] = set()
        for path in paths:
            if path in matched or os.path.dirname(path) in ignored:
                ignored.add(path)
        return ignored


def filter_excluded(tree, excludes: Sequence[str], includes: Sequence[str] = ()) -> set[str]:
    """What a walk with Filter leaves out: paths it excludes and everything below them."""
    rules = Filter(excludes, includes)
    left_out: set[str] = set()
    for path, is_dir in sorted(entries(tree).items()):
        if os.path.dirname(path) in left_out or rules.excludes(os.fsencode(path), is_dir):
            left_out.add(path)
    return left_out


def gitignore_lines(excludes: Sequence[str], includes: Sequence[str]) -> list[str]:
    return [*excludes, *("!" + pattern for pattern in includes)]


# --- the cases seen wrong, through the command line -------------------------------------------

CASES = {
    "include-folder-keeps-its-excluded-files-out": (
        ["*.log"], ["logs"], ["a.txt", "top.log", "logs/app.log", "logs/readme"],
        {"logs", "logs/readme"}, {"logs/app.log"}),
    "include-folder-keeps-a-matched-name-inside-out": (
        ["file3"], ["bar"], ["file3", "bar/file3", "bar/other", "foo/file3"],
        {"bar", "bar/other"}, {"bar/file3"}),
    "exclude-all-include-folder-keeps-contents-out": (
        ["*"], ["docs"], ["top", "docs/x", "docs/sub/y", "other/z"],
        {"docs"}, {"docs/x", "docs/sub"}),
    "dir-only-include-takes-back-folder-and-contents": (
        ["cache"], ["cache/"], ["cache/x", "x/cache/y", "a/cache"],
        {"cache", "cache/x", "x/cache", "x/cache/y"}, {"a/cache"}),
    "trailing-double-star-keeps-the-folder": (
        ["new/keep/**"], [], ["new/keep/k", "new/keep/sub/l", "new/other"],
        {"new/keep", "new/other"}, {"new/keep/k", "new/keep/sub"}),
}


@pytest.mark.parametrize("excludes, includes, files, kept, left_out", CASES.values(), ids=CASES.keys())
def test_copy_leaves_out_what_git_ignores(cli, make_tree, tmp_path, excludes, includes, files, kept,
                                          left_out):
    src = make_tree({name: name.encode() for name in files})
    ignored = git_ignored(src, gitignore_lines(excludes, includes))
    assert kept.isdisjoint(ignored) and left_out <= ignored  # what git says, spelled out

    args = [arg for pattern in excludes for arg in ("--exclude", pattern)]
    args += [arg for pattern in includes for arg in ("--include", pattern)]
    result = cli("copy", "--jobs", "1", *args, src, tmp_path / "dst")

    assert result.exit_code == 0, result.output
    assert set(entries(tmp_path / "dst")) == set(entries(src)) - ignored


# --- git as the oracle ------------------------------------------------------------------------

ORACLE_TREE = ["a.txt", "a.log", "logs/app.log", "logs/deep/x.log", "logs/deep/keep.txt",
               "src/main.py", "src/main.o", "src/lib/util.o", "src/lib/logs", "build/out.bin",
               "docs/a.md", "docs/sub/b.md", "cache/x", "x/cache/y", "new/keep/k", "new/keep/sub/l",
               "a/b/c/d", "a/x/b/y", ".hidden", "foo/bar/foo/bar", "!bang", "#hash", "sp ace/f",
               "sp/f", "sp /f"]

PATTERN_SETS = [
    ["*.log", "!logs"], ["*.log", "!logs/"], ["logs", "!logs/app.log"], ["*", "!docs"],
    ["*", "!*/", "!*.md"], ["cache", "!cache/"], ["new/keep/**"], ["src/**/*.o"],
    ["/a*", "!a.log"], ["**/deep"], ["a/**/b"], ["a/**/"], ["foo/bar"], ["foo/**/bar/"],
    ["*/", "!src"], ["src/lib/", "!src/lib/logs"], ["?.*", "!.hidden"], ["[ab]*", "![!a]*"],
    ["logs/*", "!logs/deep", "logs/deep/*.log"], ["\\!bang", "\\#hash"], ["!\\!bang"],
    ["*a*", "!#hash", "!!bang"], ["sp ace/"], ["sp /"], ["s* /"],
    ["**/*.o", "!src/main.o"], ["docs/**/*.md"], ["/**/b"], ["**"], ["*/*", "!*/*/"],
    ["**/*/**"], ["*/**", "!a/**"],
]


@pytest.mark.parametrize("lines", PATTERN_SETS, ids=[" ".join(lines) for lines in PATTERN_SETS])
def test_filter_matches_git_check_ignore(make_tree, lines):
    tree = make_tree({**{name: b"x" for name in ORACLE_TREE}, "empty/dir": Dir()})

    assert filter_excluded(tree, lines) == git_ignored(tree, lines)


def test_git_walk_agrees_with_check_ignore(make_tree, tmp_path):
    """The oracle's reading of check-ignore is git's own walk: git ls-files lists the same files."""
    tree = make_tree({name: b"x" for name in ORACLE_TREE})
    for lines in PATTERN_SETS:
        repo = tmp_path / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(tree, repo)
        git(repo, "init", "-q", "--template=")
        (repo / ".gitignore").write_text("".join(line + "\n" for line in lines))
        listed = set(os.fsdecode(p) for p in git(repo, "ls-files", "-o", "-z", "--exclude-standard")
                     .split(b"\0") if p) - {".gitignore"}
        files = {path for path, is_dir in entries(tree).items() if not is_dir}
        assert listed == files - git_ignored(tree, lines), lines


# Random trees from these names, and patterns from pieces that collide with them. Not drawn,
# because git and pathspec differ there for reasons outside matching: tabs and other trailing
# white space (git trims only spaces, pathspec all white space), "\ " escapes next to trailing
# spaces (git keeps "a\  " as "a\ ", pathspec trims it to "a\" and rejects it), POSIX classes
# like [[:alpha:]] (git knows them, pathspec does not), "/" or "\" inside [...] and reversed
# ranges like [b-a] (git matches nothing there, we refuse the pattern), and unclosed "[" (git and
# pathspec both never match it).
# Nor "**" glued to a pattern's literal start, as in "!!**/a" (an include "!**/a"): git compares
# the part before the first wildcard on its own and matches the rest from there, so that "**" acts
# as a leading "**/" ("a**/b" matches "ax/y/b" and "ab", "[a]**/b" matches neither), against its
# own documentation, which says such "**" is a plain "*" (as pathspec has it). Only an include
# starting with "!" gets there ("!**/a" is the line "!!**/a"), so those are not drawn.
NAMES = ["a", "b", "ab", "ba", "a.b", ".a", "a b", "a ", "!a", "#a", "a*", "[a]"]
PIECES = [*NAMES[:-4], "\\!a", "\\#a", "a\\*", "\\[a]", "*", "?", "**", "a*", "*b", "?b", ".*",
          "[ab]", "[!a]", "[^b]", "[a-b]", "[]a]", "a?", "*a*"]


# Half the draws from a few pieces, so that patterns and names often collide.
names = st.one_of(st.sampled_from(["a", "b"]), st.sampled_from(NAMES))
pieces = st.one_of(st.sampled_from(["a", "b", "*", "**"]), st.sampled_from(PIECES))


@st.composite
def patterns(draw) -> str:
    segments = draw(st.lists(pieces, min_size=1, max_size=3))
    return (draw(st.sampled_from(["", "", "!"])) + draw(st.sampled_from(["", "", "/"]))
            + "/".join(segments) + draw(st.sampled_from(["", "", "/", " ", "/ "])))


paths = st.lists(names, min_size=1, max_size=3).map("/".join)
include_patterns = patterns().filter(lambda pattern: not pattern.startswith("!**"))


@settings(max_examples=150, deadline=None)
@given(files=st.lists(paths, min_size=1, max_size=8), folders=st.lists(paths, max_size=3),
       excludes=st.lists(patterns(), min_size=1, max_size=4), includes=st.lists(include_patterns, max_size=2))
def test_random_patterns_match_git(files, folders, excludes, includes):
    with tempfile.TemporaryDirectory() as tree:
        for folder in folders:
            if not os.path.lexists(os.path.join(tree, folder)):
                try:
                    os.makedirs(os.path.join(tree, folder))
                except (FileExistsError, NotADirectoryError):
                    pass  # a file is in the way
        for name in files:
            try:
                build(tree, {name: b"x"})
            except (IsADirectoryError, FileExistsError, NotADirectoryError):
                pass  # a folder has that name, or a file is in the way
        lines = gitignore_lines(excludes, includes)

        assert filter_excluded(tree, excludes, includes) == git_ignored(tree, lines), lines


# --- bad patterns -----------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["[z-a]", "a\\", "*.o/[b-a]/x"])
@pytest.mark.parametrize("option", ["--exclude", "--include", "--exclude-from"])
@pytest.mark.parametrize("command", ["copy", "sync"])
def test_bad_pattern_is_one_line_and_exit_2_before_dst_is_made(make_tree, tmp_path, command, option,
                                                                pattern):
    src = make_tree({"a/b": b"x"})
    if option == "--exclude-from":
        (tmp_path / "patterns").write_text(f"# comment\n*.tmp\n{pattern}\n")
        args = [option, str(tmp_path / "patterns")]
    else:
        args = [option, pattern]

    done = run_mirror(command, *args, src, tmp_path / "dst")

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert f"bad filter pattern '{pattern}'" in done.stderr
    assert not (tmp_path / "dst").exists()


def test_bad_pattern_stops_check_with_one_line(make_tree):
    src, dst = make_tree({"a": b"x"}), make_tree({"a": b"x"})

    done = run_mirror("check", "--exclude", "[z-a]", src, dst)

    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "bad filter pattern '[z-a]'" in done.stderr


@pytest.mark.parametrize("excludes, includes", [(["ok", "[z-a]"], []), ([], ["a\\"]), (["!a\\"], [])])
def test_constructing_a_filter_checks_every_pattern(excludes, includes):
    with pytest.raises(MirrorError, match="^bad filter pattern '"):
        Filter(excludes, includes)
