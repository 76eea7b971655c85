"""A fresh loop-mounted ext4 for one case: the shared disk's state must not decide the ratios."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path


class LoopFs:
    """A fresh ext4 without a journal in a sparse image, loop-mounted (DESIGN.md: the shared
    disk's state can swamp every ratio); falls back to a plain folder when it cannot mount."""

    def __init__(self, data: Path, name: str, size: int, inodes: int) -> None:
        self.image = data / "loop" / f"{name}.img"
        self.root = data / "mnt" / name
        self.mounted, self.problem = False, None
        self.root.mkdir(parents=True, exist_ok=True)
        self.image.parent.mkdir(parents=True, exist_ok=True)
        self._run(["umount", str(self.root)], quiet=True)     # left by an interrupted run
        self.image.unlink(missing_ok=True)
        steps = [["truncate", "-s", str(size), str(self.image)],
                 # inode tables written now, not by ext4lazyinit in the middle of a timed run
                 ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-N", str(inodes),
                  "-E", "lazy_itable_init=0", str(self.image)],
                 ["mount", "-o", "loop", str(self.image), str(self.root)]]
        for argv in steps:
            self.problem = self._run(argv)
            if self.problem:
                self.image.unlink(missing_ok=True)
                return
        self.mounted = True

    @staticmethod
    def _run(argv: list[str], quiet: bool = False) -> str | None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as error:
            return f"{argv[0]}: {error}"
        if done.returncode and not quiet:
            return f"`{' '.join(argv[:2])} ...` failed: {done.stderr.strip()[-200:]}"
        return None

    def close(self) -> None:
        if self.mounted:
            if self._run(["umount", str(self.root)]):
                time.sleep(1)
                self._run(["umount", "-l", str(self.root)])
            self.image.unlink(missing_ok=True)
            self.mounted = False
            try:
                self.root.rmdir()
            except OSError:
                pass
