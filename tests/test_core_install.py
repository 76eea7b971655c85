"""Without a C compiler, `pip install` still installs mirror, and the pure-Python core runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.core import FORCE_PURE

CHECKOUT = Path(__file__).parent.parent


def setuptools_builds_wheels() -> bool:
    """setuptools 70.1 and later build wheels themselves (older ones need the wheel package)."""
    try:
        from importlib.metadata import version
        return tuple(int(part) for part in version("setuptools").split(".")[:2]) >= (70, 1)
    except Exception:  # not installed, or a version that is not numbers
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not setuptools_builds_wheels(),
                    reason="needs setuptools >= 70.1 (the test extra installs it)")
def test_without_a_compiler_mirror_installs_and_runs_its_pure_core(tmp_path, make_tree):
    source = tmp_path / "checkout"  # what a clean clone has: no core built in place
    shutil.copytree(CHECKOUT / "mirror", source / "mirror",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(CHECKOUT / name, source)
    no_tools = tmp_path / "bin"  # a PATH without cc or gcc, and CC that fails as well
    no_tools.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", FORCE_PURE)}
    target = tmp_path / "target"

    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        env={**env, "PATH": str(no_tools), "CC": "/bin/false"}, capture_output=True, text=True, timeout=280)

    assert install.returncode == 0, install.stdout + install.stderr
    # neither the module nor its C source
    assert list(target.glob("mirror/_core*")) == [] and (target / "mirror" / "core.py").exists()
    installed = {**env, "PYTHONPATH": str(target)}
    version = subprocess.run([sys.executable, "-m", "mirror", "--version"], env=installed,
                             capture_output=True, text=True, cwd=tmp_path)
    assert "; core: Python (no compiled core: " in version.stdout, version.stdout + version.stderr
    src = make_tree({"a/b.txt": b"hi", "c": b"x" * 5000})
    copy = subprocess.run([sys.executable, "-m", "mirror", "copy", "-q", str(src), str(tmp_path / "dst")],
                          env=installed, capture_output=True, text=True, cwd=tmp_path)
    assert copy.returncode == 0, copy.stderr
    assert (tmp_path / "dst" / "a" / "b.txt").read_bytes() == b"hi"
    assert (tmp_path / "dst" / "c").read_bytes() == b"x" * 5000
