"""The compiled core builds without a warning, runs clean under valgrind, and leaks nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tracemalloc
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from mirror.model import Action, Op, Reason
from mirror.plan.scan import entry_from_stat
from mirror.run.copyfile import FolderFacts

SOURCE = Path(__file__).parent.parent / "mirror" / "_core.c"
EXERCISE = Path(__file__).parent / "memcheck" / "exercise.py"
STRICT = ["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-O1", "-g"]
COMPILER = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
HEADERS = Path(sysconfig.get_paths()["include"], "Python.h")


@pytest.fixture(scope="module")
def strict_build(tmp_path_factory) -> Path:
    """mirror/_core.c built with every warning an error, -O1 -g (for valgrind's stacks)."""
    if not COMPILER or not shutil.which(COMPILER.split()[0]):
        pytest.skip("no C compiler: the pure core is all this machine runs")
    if not HEADERS.exists():
        pytest.skip(f"no Python headers ({HEADERS}): pip cannot build the core here either")
    built = tmp_path_factory.mktemp("core") / ("_core" + sysconfig.get_config_var("EXT_SUFFIX"))
    command = [*COMPILER.split(), *STRICT, f"-I{HEADERS.parent}", "-o", str(built), str(SOURCE)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return built


def test_the_core_compiles_without_a_warning(strict_build):
    assert strict_build.stat().st_size > 0


def errors_in(report: Path, module: Path) -> list[str]:
    """valgrind's errors (leaks too) with a frame in `module`: CPython's own noise (it reads
    memory valgrind cannot tell is set, in int.from_bytes for one) is not the core's."""
    found = []
    for error in ElementTree.parse(report).getroot().iter("error"):
        frames = [(frame.findtext("obj") or "", frame.findtext("file") or "", frame.findtext("fn") or "?")
                  for frame in error.iter("frame")]
        if any(obj == str(module) or file == SOURCE.name for obj, file, _ in frames):
            what = error.findtext("what") or error.findtext("xwhat/text") or error.findtext("kind")
            found.append(f"{what}: " + " <- ".join(fn for _, _, fn in frames[:8]))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed (.ci/run installs it)")
def test_the_core_runs_clean_under_valgrind(strict_build, tmp_path):
    report = tmp_path / "memcheck.xml"
    command = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
               "--errors-for-leak-kinds=definite", "--xml=yes", f"--xml-file={report}",
               sys.executable, str(EXERCISE), str(strict_build), str(tmp_path / "work")]
    env = {**os.environ, "PYTHONMALLOC": "malloc",  # every object a malloc valgrind follows
           "PYTHONPATH": os.pathsep.join([str(SOURCE.parent.parent), os.environ.get("PYTHONPATH", "")])}

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=580)

    assert result.returncode == 0 and result.stdout == "exercised\n", result.stderr[-3000:]
    assert errors_in(report, strict_build) == []


CALLS = 1000  # Python's own caches may grow by a few KB meanwhile (3.12: 3 KB)


def test_a_call_keeps_no_memory(make_tree, tmp_path):
    """References and buffers are released, on success and on a declined file alike."""
    from mirror import core
    if core.copy_files is None:
        pytest.skip(f"the pure core runs: {core.WHY}")
    src = make_tree({"first": b"data", "second": b"more data"})  # names of one byte are shared objects
    (tmp_path / "dst").mkdir()
    src_fd, dst_fd = os.open(src, os.O_RDONLY), os.open(tmp_path / "dst", os.O_RDONLY)
    listed = entry_from_stat(b"first", os.lstat(src / "first"))
    batch = [Action(Op.COPY, b"first", Reason.MISSING, listed, listed),
             Action(Op.COPY, b"second", Reason.MISSING, listed, None)]   # listed as "first": declined

    def copy_many() -> None:
        for _ in range(CALLS):
            core.copy_files(src_fd, dst_fd, batch, FolderFacts(), False, core.Ladder.LOOP, True)
            core.list_pair(src_fd, -1, True)  # a listing made, and one with names alone
            core.list_pair(src_fd, dst_fd, None, 1)
            core.stat_pair(src_fd, dst_fd, [b"first", b"gone"], [b"second"], False)
    copy_many()  # warm: caches, interned names
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copy_many()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        os.close(src_fd)
        os.close(dst_fd)
    assert grown < 10 * CALLS, f"{grown} bytes kept by {CALLS} calls"  # a leak keeps 33 bytes a call or more
