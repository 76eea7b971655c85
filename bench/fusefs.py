"""A fusepy passthrough that sleeps on every lookup/getattr, open and create (a slow filesystem)."""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from .tools import REPO_ROOT, apt_install, tool_env

# libfuse's high-level API answers a kernel LOOKUP by calling getattr, so one delay in getattr
# covers both lookup and getattr.
DELAYED = ("getattr", "open", "create")


def fuse_missing() -> str | None:
    """None when a FUSE mount can be tried; else why not (one apt-get attempt for libfuse2)."""
    import ctypes.util
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if ctypes.util.find_library("fuse") is None or shutil.which("fusermount") is None:
        print("  libfuse2/fusermount missing: trying apt-get install -y libfuse2 fuse", flush=True)
        apt_install(["libfuse2", "fuse"])
        if ctypes.util.find_library("fuse") is None:
            return "libfuse2 is missing and `apt-get install -y libfuse2 fuse` failed"
    probe = subprocess.run([sys.executable, "-c", "import fuse"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return "fusepy is not importable (pip install fusepy, the `bench` extra): " + \
            (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


def make_operations(root: str, delay: float):  # -> fuse.Operations (fusepy is imported late)
    from fuse import FuseOSError, Operations  # fusepy

    class Passthrough(Operations):
        """Every path maps to root + path; getattr, open and create sleep `delay` first."""

        use_ns = True

        def __init__(self) -> None:
            self.root = root
            self.mutex = threading.Lock()
            self.counts: dict[str, int] = {}
            self.active = 0
            self.max_active = 0

        def __call__(self, op: str, path: str, *args):
            with self.mutex:
                self.counts[op] = self.counts.get(op, 0) + 1
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                if op in DELAYED:
                    time.sleep(delay)
                return getattr(self, op)(self.root + path, *args)
            except OSError as error:
                raise FuseOSError(error.errno or errno.EIO) from None
            finally:
                with self.mutex:
                    self.active -= 1

        def stats(self) -> dict[str, object]:
            with self.mutex:
                return {"counts": dict(self.counts), "max_concurrent": self.max_active}

        def access(self, path: str, mode: int) -> None:
            if not os.access(path, mode):
                raise FuseOSError(errno.EACCES)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            st = os.fstat(fh) if fh is not None else os.lstat(path)
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                    "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
            attrs = {key: getattr(st, key) for key in keys}
            for key in ("atime", "mtime", "ctime"):     # fusepy reads st_*time, as ns here
                attrs[f"st_{key}"] = attrs.pop(f"st_{key}_ns")
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(path)]

        def readlink(self, path: str) -> str:
            return os.readlink(path)

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(path)
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks",
                    "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize",
                    "f_namemax")}

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(path, mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(path, uid, gid, follow_symlinks=False)

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
            if times is None:
                now = time.time_ns()
                times = (now, now)
            os.utime(path, ns=times, follow_symlinks=False)

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(path, mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(path)

        def mknod(self, path: str, mode: int, dev: int) -> None:
            os.mknod(path, mode, dev)

        def unlink(self, path: str) -> None:
            os.unlink(path)

        def symlink(self, target: str, source: str) -> None:
            # fusepy passes (link path, link target); the root was prepended to the first only
            os.symlink(source, target)

        def link(self, target: str, source: str) -> None:
            os.link(self.root + source, target)

        def rename(self, old: str, new: str) -> None:
            os.rename(old, self.root + new)

        def create(self, path: str, mode: int, fi=None) -> int:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        def open(self, path: str, flags: int) -> int:
            return os.open(path, flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(path, length)

        def flush(self, path: str, fh: int) -> None:
            return None

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            (os.fdatasync if datasync else os.fsync)(fh)

    return Passthrough()


class Mount:
    """Context manager: a passthrough daemon of `backing` at `mountpoint`, unmounted on exit."""

    def __init__(self, backing: Path, mountpoint: Path, delay: float, stats_file: Path) -> None:
        self.backing, self.mountpoint = backing, mountpoint
        self.delay, self.stats_file = delay, stats_file
        self.process: subprocess.Popen[bytes] | None = None
        self.log = mountpoint.with_name(mountpoint.name + ".log")

    def __enter__(self) -> "Mount":
        unmount(self.mountpoint)                      # a stale mount of an interrupted run
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.stats_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "bench.fusefs", str(self.backing), str(self.mountpoint),
                "--delay", str(self.delay), "--stats", str(self.stats_file)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, env=tool_env(), cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"FUSE mount at {self.mountpoint} failed: "
                                   + self.log.read_text(errors="replace")[-400:])
            time.sleep(0.05)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        unmount(self.mountpoint)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stats(self) -> dict[str, object]:
        try:
            return json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}


def unmount(mountpoint: Path) -> None:
    """fusermount -u, then a lazy unmount if the mount is busy; silent when not mounted."""
    if not os.path.ismount(mountpoint):
        return
    for argv in (["fusermount", "-u", str(mountpoint)], ["fusermount", "-uz", str(mountpoint)],
                 ["umount", "-l", str(mountpoint)]):
        if shutil.which(argv[0]):
            subprocess.run(argv, capture_output=True, check=False)
        for _ in range(50):
            if not os.path.ismount(mountpoint):
                return
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--delay", type=float, default=0.002, help="seconds (default 0.002)")
    parser.add_argument("--stats", help="write op counts as JSON here on unmount")
    args = parser.parse_args()
    from fuse import FUSE  # fusepy
    operations = make_operations(os.path.realpath(args.backing), args.delay)
    try:
        # big_writes: one write per 16 KiB file instead of four, so the daemon's own CPU (one
        # Python process, on a 2-core machine shared with the copier) stays out of the way
        FUSE(operations, args.mountpoint, foreground=True, nothreads=False,
             entry_timeout=0, attr_timeout=0, negative_timeout=0, big_writes=True,
             fsname="benchslow")
    finally:
        if args.stats:
            Path(args.stats).write_text(json.dumps(operations.stats()))


if __name__ == "__main__":
    main()
