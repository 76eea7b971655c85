"""Names in output are data: escaped for people, raw for machines (-0, --json); errors said once."""
from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import subprocess
import sys

import pytest

# Each odd name, and how a line for people shows it.
NAMES = {
    b"evil\n- important.db": "evil\\n- important.db",  # would forge a line of its own
    b"clear\x1b[2J": "clear\\x1b[2J",                  # would clear the terminal
    b"caf\\xe9": "caf\\\\xe9",                         # a backslash: reads like an escape
    b"caf\xe9": "caf\\xe9",                            # Latin-1: not UTF-8
    "next\u0085line".encode(): "next\\u0085line",      # C1 NEL, in UTF-8
    b"tab\tand\rcr\x7f": "tab\\tand\\rcr\\x7f",        # other controls, and DEL
    "\u00e9t\u00e9 ok".encode(): "\u00e9t\u00e9 ok",   # printable: left as it is
}
LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} mirror\[\d+\] ")


def run_bytes(*args) -> subprocess.CompletedProcess:
    """The real command in a subprocess, its output as bytes (conftest's run_mirror decodes it)."""
    command = [sys.executable, "-m", "mirror", *map(os.fsencode, args)]
    return subprocess.run(command, capture_output=True, timeout=120)


def same_root_times(src, dst) -> None:
    """So that check has no `* .` line for the roots themselves."""
    st = os.stat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_check_lines_escape_names(make_tree):
    src = make_tree({name: b"x" for name in NAMES})
    dst = make_tree({})
    same_root_times(src, dst)

    result = run_bytes("check", src, dst)

    assert result.returncode == 1, result.stderr
    expected = "".join(f"+ {NAMES[name]}\n" for name in sorted(NAMES))
    assert result.stdout == expected.encode()
    lines = result.stdout.splitlines()
    assert not any(line.startswith(b"- ") for line in lines), "no forged deletion"
    assert b"\x1b" not in result.stdout and b"\xc2\x85" not in result.stdout


def test_verbose_and_log_file_escape_names_and_roots(make_tree, tmp_path):
    forged = b"x\n2030-01-01T00:00:00+0000 mirror[1] summary: all good"
    src = make_tree({**{name: b"x" for name in NAMES}, forged: b"x"},
                    root=tmp_path / "src\n- forged root")
    log = tmp_path / "mirror.log"

    result = run_bytes("copy", "-v", "--log-file", log, src, tmp_path / "dst")

    assert result.returncode == 0, result.stderr
    shown = {**NAMES, forged: "x\\n2030-01-01T00:00:00+0000 mirror[1] summary: all good"}
    expected = sorted(f"copy     {text}  (missing)".encode() for text in shown.values())
    assert sorted(result.stdout.splitlines()) == expected
    lines = log.read_bytes().splitlines()
    assert all(LOG_LINE.match(line) for line in lines), "every line is the log's own"
    assert sorted(LOG_LINE.sub(b"", line) for line in lines[1:-1]) == expected
    assert (b" start: copy " + os.fsencode(tmp_path) + b"/src\\n- forged root "
            + os.fsencode(tmp_path) + b"/dst (jobs ") in lines[0]
    told = [LOG_LINE.sub(b"", line) for line in lines]
    assert [line for line in told if line.startswith(b"end: exit 0: ")] == [told[-1]]


def test_warnings_escape_names_on_stderr_and_in_the_log(make_tree, tmp_path, monkeypatch):
    src = make_tree({"ok": b"x"})
    monkeypatch.chdir(src)  # a short relative address: sockets' are limited to 108 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(b"sock\nmirror: error: forged\x1b[2J")
        log = tmp_path / "mirror.log"
        result = run_bytes("copy", "--log-file", log, src, tmp_path / "dst")

    assert result.returncode == 0, result.stderr
    warning = b"sock\\nmirror: error: forged\\x1b[2J: socket, not copied"
    assert result.stderr.splitlines()[0] == b"mirror: warning: " + warning
    assert not any(line.startswith(b"mirror: error") for line in result.stderr.splitlines())
    lines = log.read_bytes().splitlines()
    assert all(LOG_LINE.match(line) for line in lines)
    told = [LOG_LINE.sub(b"", line) for line in lines]
    assert [line for line in told if line.startswith(b"warning")] == [b"warning: " + warning]


def drop_root_reading() -> None:
    """In the child: lose root's power to read any folder, so that mode 000 means unreadable."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                os._exit(99)


def test_an_unreadable_folder_is_one_error_in_one_form(make_tree, tmp_path):
    src = make_tree({"secret\x1b[2J/f": b"x", "ok": b"x"})
    locked = os.path.join(src, "secret\x1b[2J")
    os.chmod(locked, 0)
    log = tmp_path / "mirror.log"
    try:
        result = subprocess.run([sys.executable, "-m", "mirror", "copy", "--json", "--log-file",
                                 str(log), str(src), str(tmp_path / "dst")],
                                capture_output=True, text=True, timeout=120, preexec_fn=drop_root_reading)
    finally:
        os.chmod(locked, 0o755)
    if result.returncode == 99:
        pytest.skip("cannot drop root's capabilities here")

    assert result.returncode == 1, result.stderr
    message = "cannot read folder: Permission denied (EACCES)"
    errors = [line for line in result.stderr.splitlines() if line.startswith("mirror: error")]
    assert errors == [f"mirror: error: secret\\x1b[2J: {message}"]
    logged = [line for line in log.read_text().splitlines() if "secret" in line and "mkdir" not in line]
    assert len(logged) == 1 and logged[0].endswith(f" error: secret\\x1b[2J: {message}")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["errors"] == [{"path": "secret\x1b[2J", "display": "secret\\x1b[2J", "error": message}]


def test_a_failed_copy_is_logged_once_as_stderr_says_it(make_tree, tmp_path):
    src = make_tree({"wanted.txt": b"a file where DST has a non-empty folder"})
    dst = make_tree({"wanted.txt/keep": b"k"})
    log = tmp_path / "mirror.log"

    result = run_bytes("copy", "--retries", "0", "--log-file", log, src, dst)

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if b"wanted.txt" in line]
    assert len(errors) == 1 and errors[0].startswith(b"mirror: error: wanted.txt: ")
    logged = [LOG_LINE.sub(b"", line) for line in log.read_bytes().splitlines() if b"wanted.txt" in line]
    assert logged == [errors[0].removeprefix(b"mirror: ")]


def test_check_json_lists_differences_with_raw_and_shown_names(make_tree):
    src = make_tree({**{name: b"x" for name in NAMES}, "changed": b"new"})
    dst = make_tree({"changed": b"old!", "extra": b"e"})
    same_root_times(src, dst)

    result = run_bytes("check", "--json", src, dst)

    assert result.returncode == 1
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["differences"] == len(NAMES) + 2, "still the count"
    listed = {os.fsencode(item["path"]): item for item in summary["difference_list"]}
    assert listed[b"changed"] == {"path": "changed", "display": "changed", "marker": "*",
                                  "reason": "size differs"}
    assert listed[b"extra"]["marker"] == "-"
    for name, text in NAMES.items():
        assert listed[name] == {"path": os.fsdecode(name), "display": text, "marker": "+", "reason": ""}


def test_check_print0_gives_raw_names_ended_by_nul(make_tree):
    src = make_tree({**{name: b"x" for name in NAMES}, "changed": b"new"})
    dst = make_tree({"changed": b"old!"})
    os.utime(dst, ns=(0, 0))  # the root differs too: listed as "."

    result = run_bytes("check", "-0", src, dst)

    assert result.returncode == 1, result.stderr
    records = [b"+ " + name for name in NAMES] + [b"* changed", b"* ."]
    assert sorted(result.stdout.split(b"\0")[:-1]) == sorted(records)
    assert result.stdout.endswith(b"\0") and result.stdout.count(b"\0") == len(records)
    pipeline = subprocess.run(["sh", "-c", '"$@" | grep -az "^+ " | cut -z -c3-', "sh", sys.executable,
                               "-m", "mirror", "check", "--print0", src, dst], capture_output=True)
    assert sorted(pipeline.stdout.split(b"\0")[:-1]) == sorted(NAMES)


def test_check_print0_with_json_is_refused(make_tree, tmp_path):
    src = make_tree({"a": b"1"})

    result = run_bytes("check", "-0", "--json", src, tmp_path / "dst")

    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.splitlines() == [b"mirror: error: --print0 and --json cannot be used together: "
                                          b"the JSON lists the differences too (difference_list)"]
