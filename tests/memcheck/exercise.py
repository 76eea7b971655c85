"""Every function of a build of mirror._core, on every entry type, long names and errors.

Run as `python exercise.py CORE_SO WORKDIR` (by test_core_memory.py, under valgrind): loads the
module from CORE_SO, builds a tree in WORKDIR, and exits 0 if every call answered as expected.
"""
import errno
import importlib.util
import os
import resource
import signal
import socket
import sys

from mirror.core import Ladder
from mirror.model import Action, Op, Reason
from mirror.plan import scan
from mirror.plan.scan import entry_from_stat
from mirror.run.copyfile import FolderFacts

spec = importlib.util.spec_from_file_location("mirror._core", sys.argv[1])
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
work = os.fsencode(sys.argv[2])
src, dst = os.path.join(work, b"src"), os.path.join(work, b"dst")
LONG = b"L" * 255
os.makedirs(src)
os.makedirs(dst)
for name, size in ((b"empty", 0), (b"small", 100), (LONG, 3000), (b"mid", 100_000), (b"two-mib", 2 << 20)):
    with open(os.path.join(src, name), "wb") as out:
        out.write(os.urandom(size))
os.mkfifo(os.path.join(src, b"fifo"))
os.symlink(b"small", os.path.join(src, b"link"))
os.mkdir(os.path.join(src, b"folder"))
unix = socket.socket(socket.AF_UNIX)
unix.bind(os.path.join(src, b"socket"))
with open(os.path.join(src, b"gone"), "wb") as out:
    out.write(b"soon gone")


class Unsure:
    def __bool__(self):
        raise ZeroDivisionError


def action(name: bytes, new: bool = True) -> Action:
    listed = entry_from_stat(name, os.lstat(os.path.join(src, name)))
    old = None if new else listed
    return Action(Op.COPY, name, Reason.MISSING, listed, old)


EVERY = [action(name) for name in (b"empty", b"small", LONG, b"mid", b"two-mib", b"fifo", b"link",
                                   b"folder", b"socket", b"gone")]
os.unlink(os.path.join(src, b"gone"))  # listed, then vanished: ENOENT


def copy_all(actions, method, anonymous=True, owner=True, src_fd=None, dst_fd=None) -> list:
    """Every item's answer, calling again after each declined one."""
    src_fd = os.open(src, os.O_RDONLY) if src_fd is None else src_fd
    dst_fd = os.open(dst, os.O_RDONLY) if dst_fd is None else dst_fd
    facts, answers = FolderFacts(), []
    while len(answers) < len(actions):
        answers += core.copy_files(src_fd, dst_fd, actions[len(answers):], facts, owner, method, anonymous)
    return answers


def clear_dst() -> None:
    for name in os.listdir(dst):
        os.unlink(os.path.join(dst, name))


for method in Ladder:
    for anonymous in (True, False):
        clear_dst()
        answers = copy_all(EVERY, method, anonymous, owner=anonymous)
        if method is Ladder.CLONE:  # ext4 and tmpfs clone nothing: every non-empty file declined
            assert answers[0] == 0 and all(answer < 0 for answer in answers[1:]), answers
        else:
            assert answers[:5] == [0, 100, 3000, 100_000, 2 << 20], answers
            assert answers[5] == -errno.EAGAIN and answers[6] == -errno.ELOOP, answers
            assert answers[9] == -errno.ENOENT and all(answer < 0 for answer in answers[5:]), answers
clear_dst()
assert copy_all(EVERY[:2], Ladder.LOOP) == [0, 100]
assert copy_all(EVERY[:2], Ladder.LOOP) == [-errno.EEXIST] * 2  # listed as new: the names are taken
replace = [action(b"small", new=False), action(LONG, new=False)]
assert copy_all(replace, Ladder.RANGE, anonymous=True) == [100, 3000]  # renamed over the old ones
odd = Action(Op.COPY, b"small\0x", Reason.MISSING, EVERY[1].src, None)
no_name = Action(Op.COPY, b"dir/", Reason.MISSING, EVERY[1].src, None)
assert copy_all([odd, no_name], Ladder.LOOP) == [-errno.EINVAL] * 2
a_file = os.open(os.path.join(src, b"small"), os.O_RDONLY)
assert copy_all(EVERY[:1], Ladder.LOOP, src_fd=a_file) == [-errno.ENOTDIR]
assert copy_all(EVERY[1:2], Ladder.LOOP, dst_fd=a_file) == [-errno.ENOTDIR]
assert copy_all(EVERY[1:2], Ladder.LOOP, src_fd=-1) == [-errno.EBADF]
clear_dst()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # a full DST, as far as writes go
assert copy_all(EVERY[:5], Ladder.LOOP) == [0, 100, 3000, -errno.EFBIG, -errno.EFBIG]
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
assert sorted(os.listdir(dst)) == sorted([b"empty", b"small", LONG])  # no temporary file left

dst_fd = os.open(dst, os.O_RDONLY)
for wrong, error in (
        ((0, 0, [("x",)], FolderFacts(), True, 0, True), TypeError),
        ((0, 0, [Action(Op.COPY, "str", Reason.MISSING, EVERY[1].src)], FolderFacts(), True, 0, True),
         TypeError),
        ((0, 0, [Action(Op.COPY, b"x", Reason.MISSING, EVERY[1].src._replace(mode="0"))], FolderFacts(),
          True, 0, True), TypeError),
        ((0, 0, [Action(Op.COPY, b"x", Reason.MISSING, (1, 2))], FolderFacts(), True, 0, True), TypeError),
        ((0, 0, 5, FolderFacts(), True, 0, True), TypeError),
        ((0, 0, [], object(), True, 0, True), AttributeError),
        ((0, 0, [], FolderFacts(), True, 7, True), ValueError),
        ((0, 0, [], FolderFacts(), True), TypeError)):
    try:
        core.copy_files(*wrong)
    except error:
        pass
    else:
        raise AssertionError(f"no {error.__name__} for {wrong}")
facts = FolderFacts()
facts.modes = []
try:
    core.copy_files(0, dst_fd, [], facts, True, 0, True)
except TypeError:
    pass
else:
    raise AssertionError("facts.modes that is not a dict was taken")
facts = FolderFacts()
facts.owner, facts.modes = ("a", 0), {0o600: 0o600}
try:
    core.copy_files(os.open(src, os.O_RDONLY), dst_fd, EVERY[1:2], facts, True, 0, True)
except TypeError:
    pass
else:
    raise AssertionError("an owner that is no pair of numbers was taken")
assert core.copy_files(0, 0, [], FolderFacts(), True, 0, True) == []

# list_pair and stat_pair: src holds every entry type and a 255-byte name; dst some of them
src_fd, dst_fd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
SLOW = 500_000
FIELDS = ("st_mode", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns", "st_atime_ns", "st_uid", "st_nlink")


def plain(listed):
    if len(listed) == 2:
        return sorted(listed[0]), sorted(listed[1])
    return listed[0], *({name: [getattr(st, field) for field in FIELDS] for name, st in side.items()}
                        for side in listed[1:])


for owner in (None, True, False):
    for most in (-1, 2):
        listed = core.list_pair(src_fd, dst_fd, owner, most, SLOW)
        pure = scan.list_pair(src_fd, dst_fd, owner, None if most < 0 else most)
        assert plain(listed) == plain(pure), listed
    asked = [b"small", b"gone", LONG, b"fifo", b"never"]
    listed = core.stat_pair(src_fd, dst_fd, asked, asked, owner, SLOW)
    assert plain(listed) == plain(scan.stat_pair(src_fd, dst_fd, asked, asked, owner)), listed
    assert core.list_pair(src_fd, -1, owner, -1, SLOW)[2] == {}
assert core.list_pair(src_fd, dst_fd, True, -1, 0) is None  # every store slow: declined
assert core.stat_pair(src_fd, dst_fd, [b"small"] * 6, [], True, 0) is None
for call, error in ((lambda: core.list_pair(a_file, -1, True, -1, SLOW), NotADirectoryError),
                    (lambda: core.list_pair(src_fd, a_file, True, -1, SLOW), NotADirectoryError),
                    (lambda: core.list_pair(-1, -1, True, -1, SLOW), OSError),
                    (lambda: core.stat_pair(a_file, -1, [b"x"], [], True, SLOW), NotADirectoryError),
                    (lambda: core.stat_pair(src_fd, -1, [b"a\0b"], [], True, SLOW), TypeError),
                    (lambda: core.stat_pair(src_fd, -1, (b"a",), [], True, SLOW), TypeError),
                    (lambda: core.stat_pair(src_fd, dst_fd, [], ["str"], True, SLOW), TypeError),
                    (lambda: core.list_pair(src_fd, -1, Unsure(), -1, SLOW), ZeroDivisionError),
                    (lambda: core.list_pair(src_fd, -1, True, "most", SLOW), TypeError)):
    try:
        call()
    except error:
        pass
    else:
        raise AssertionError(f"no {error.__name__}")
print("exercised")
