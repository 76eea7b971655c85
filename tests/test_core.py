"""The compiled core: built where a compiler is, chosen once, and shown by --version."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest

from conftest import run_mirror
from mirror import core

COMPILER = shutil.which("cc") or shutil.which("gcc")
BUILT = importlib.util.find_spec("mirror._core") is not None
needs_core = pytest.mark.skipif(not BUILT, reason="mirror._core is not built (no compiler at install)")


def version_with(**env) -> str:
    environ = {name: value for name, value in os.environ.items() if name != core.FORCE_PURE}
    result = run_mirror("--version", env={**environ, **env})
    assert result.returncode == 0, result.stderr
    return re.fullmatch(r"mirror \S+ \(Python \S+; core: (.*)\)\n", result.stdout).group(1)


@pytest.mark.skipif(not COMPILER, reason="no C compiler here: the pure core is all there is")
def test_the_core_is_built_where_a_compiler_is():
    assert BUILT  # `pip install` built it; a silent fallback to pure Python would be a regression


@needs_core
def test_version_says_the_compiled_core_runs_unless_the_pure_one_is_forced():
    assert version_with() == "C (mirror._core)"
    assert version_with(MIRROR_PURE="0") == "C (mirror._core)"
    assert version_with(MIRROR_PURE="1") == "Python (MIRROR_PURE=1)"
    assert version_with(MIRROR_PURE="yes") == "Python (MIRROR_PURE=yes)"


def test_the_layout_the_compiled_core_reads_is_the_records_one():
    if not BUILT:
        pytest.skip("mirror._core is not built")
    from mirror import _core
    from mirror.run import fastcopy
    assert {key: _core.LAYOUT[key] for key in core.layout()} == core.layout()  # else choose() refuses it
    # and the copy's chunks are fastcopy's (only its speed would differ)
    assert _core.LAYOUT["fastcopy"] == {"BUFFER": fastcopy.BUFFER, "CHUNK": fastcopy.CHUNK}
