"""The contenders: mirror (or MIRROR_CMD) and the anchors cp -a, rsync -a, tar | tar, copytree."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent

Argv = list[str]


@dataclass(frozen=True)
class Tool:
    """A labelled command line builder: argv(src, dst) copies the contents of src into dst."""

    label: str
    argv: Callable[[Path, Path], Argv]
    is_mirror: bool = False


def tool_env() -> dict[str, str]:
    """The environment for every contender: the repo on PYTHONPATH so `-m mirror` resolves."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # Installed, mirror starts from compiled bytecode; a shell that forbids writing it would
    # have every run compile the package again (~0.1 s), which no user's run pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def mirror_tool(jobs: int, command: str = "copy", label: str | None = None, pure: bool = False) -> Tool:
    """mirror COMMAND SRC DST --no-progress --quiet --jobs N, or the MIRROR_CMD override;
    `pure`: with MIRROR_PURE=1 (the pure-Python core), labelled "... (pure)".

    MIRROR_CMD is split like a shell line; {src} {dst} {jobs} {cmd} are filled in when present,
    otherwise SRC and DST are appended (e.g. MIRROR_CMD="cp -a" or "rsync -a {src}/ {dst}/").
    """
    override = os.environ.get("MIRROR_CMD")

    def argv(src: Path, dst: Path) -> Argv:
        if override:
            words = shlex.split(override)
            fields = {"src": str(src), "dst": str(dst), "jobs": str(jobs), "cmd": command}
            if any("{src}" in w or "{dst}" in w for w in words):
                return [w.format(**fields) for w in words]
            return [w.format(**fields) for w in words] + [str(src), str(dst)]
        return [*(["env", "MIRROR_PURE=1"] if pure else []), sys.executable, "-m", "mirror", command,
                str(src), str(dst), "--no-progress", "--quiet", "--jobs", str(jobs)]

    label = label or f"mirror -j{jobs}"
    return Tool(f"{label} (pure)" if pure else label, argv, is_mirror=True)


def _cp(src: Path, dst: Path) -> Argv:
    return ["cp", "-a", f"{src}/.", str(dst)]


def _rsync(*options: str) -> Callable[[Path, Path], Argv]:
    def argv(src: Path, dst: Path) -> Argv:
        return ["rsync", "-a", *options, f"{src}/", f"{dst}/"]
    return argv


def _tar(src: Path, dst: Path) -> Argv:
    script = 'set -o pipefail; mkdir -p "$2" && tar -C "$1" -cf - . | tar -C "$2" -xf -'
    return ["bash", "-c", script, "bash", str(src), str(dst)]


def _copytree(src: Path, dst: Path) -> Argv:
    code = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2], symlinks=True)"
    return [sys.executable, "-c", code, str(src), str(dst)]


CP = Tool("cp -a", _cp)
RSYNC = Tool("rsync -a", _rsync())
RSYNC_DELETE = Tool("rsync -a --delete", _rsync("--delete"))
TAR = Tool("tar | tar", _tar)
COPYTREE = Tool("copytree", _copytree)


_apt_updated = False


def apt_install(packages: list[str]) -> bool:
    """apt-get install packages (after one apt-get update per process); True on success."""
    global _apt_updated
    if shutil.which("apt-get") is None:
        return False
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if not _apt_updated:
        _apt_updated = True
        subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=False,
                          **quiet)
    return done.returncode == 0


_rsync_reason: str | None = None
_rsync_checked = False


def rsync_missing() -> str | None:
    """None when rsync is usable; else why not (one apt-get install attempt is made)."""
    global _rsync_reason, _rsync_checked
    if not _rsync_checked:
        _rsync_checked = True
        if shutil.which("rsync") is None:
            print("  rsync not found: trying apt-get install -y rsync", flush=True)
            if not apt_install(["rsync"]) or shutil.which("rsync") is None:
                _rsync_reason = "rsync is missing and `apt-get install -y rsync` failed"
    return _rsync_reason


_mirror_reason: str | None = None
_mirror_checked = False


def mirror_missing() -> str | None:
    """None when mirror (or MIRROR_CMD) copies a tiny tree correctly; else the reason."""
    global _mirror_reason, _mirror_checked
    if _mirror_checked:
        return _mirror_reason
    _mirror_checked = True
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        (src / "a" / "b").mkdir(parents=True)
        (src / "a" / "b" / "x.txt").write_bytes(b"hello")
        (src / "y.txt").write_bytes(b"world" * 1000)
        argv = mirror_tool(1).argv(src, dst)
        try:
            done = subprocess.run(argv, env=tool_env(), cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            _mirror_reason = f"mirror smoke test failed to run: {error}"
            return _mirror_reason
        ok = ((dst / "a" / "b" / "x.txt").is_file() and (dst / "y.txt").is_file()
              and (dst / "y.txt").read_bytes() == b"world" * 1000)
        if done.returncode != 0 or not ok:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            _mirror_reason = (f"smoke copy failed (exit {done.returncode}, tree copied: {ok}): "
                              f"{tail[0][:160]}")
            print(f"  mirror is not usable, its contenders are skipped: {_mirror_reason}",
                  flush=True)
    return _mirror_reason


def mirror_fingerprint() -> str:
    """A short hash of mirror's sources now: the tree may change between (or during) runs."""
    import hashlib
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "mirror").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def describe_mirror() -> str:
    override = os.environ.get("MIRROR_CMD")
    return f"MIRROR_CMD={override!r}" if override else f"{sys.executable} -m mirror"
