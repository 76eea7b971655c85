"""Habits users bring from cp and rsync: a file as SRC, -a, --delete; --version, completion,
help that says what each placeholder and each command is; --json for refused runs too."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

import mirror
from mirror import core
from conftest import File, Link, file_size_limit, run_mirror, snapshot, temp_files
from mirror import InlineEngine, Options, copy_tree
from mirror.events import Discovered, Finished


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# A file as SRC, as cp and rsync take it ---------------------------------------------------

def test_a_file_as_src_goes_inside_an_existing_folder(make_tree, tmp_path):
    src = make_tree({"big.iso": File(os.urandom(3 << 20), mode=0o640, mtime_ns=10**18)})
    usb = make_tree({"other.txt": b"kept"})
    os.chmod(usb, 0o700)
    usb_before = os.stat(usb)

    result = run_mirror("copy", src / "big.iso", f"{usb}/")

    assert result.returncode == 0, result.stderr
    assert "Copied 1 file" in result.stderr
    assert snapshot(usb)[b"big.iso"] == snapshot(src)[b"big.iso"]  # bytes, mode, mtime
    assert (usb / "other.txt").read_bytes() == b"kept"
    usb_after = os.stat(usb)  # the folder is DST's own, not SRC's folder's copy
    assert stat.S_IMODE(usb_after.st_mode) == 0o700 and usb_after.st_mtime_ns != 10**18
    assert usb_after.st_mtime_ns >= usb_before.st_mtime_ns
    assert temp_files(usb) == []


def test_a_file_as_src_to_a_new_name_then_replaced_then_skipped(make_tree, tmp_path):
    src = make_tree({"a.txt": b"first"})
    dst = tmp_path / "b.txt"

    assert run_mirror("copy", src / "a.txt", dst).returncode == 0
    assert dst.read_bytes() == b"first"
    inode = os.stat(dst).st_ino
    (src / "a.txt").write_bytes(b"second version")
    again = run_mirror("copy", src / "a.txt", dst, "--json")
    unchanged = run_mirror("copy", src / "a.txt", dst, "--json")

    assert again.returncode == 0 and dst.read_bytes() == b"second version"
    assert os.stat(dst).st_ino != inode, "replaced by a rename, never rewritten in place"
    assert last_json(again.stdout)["files_copied"] == 1
    assert last_json(unchanged.stdout)["files_skipped"] == 1
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "tree1"]


def test_a_link_named_as_src_is_followed_and_a_link_as_dst_is_replaced(make_tree, tmp_path):
    src = make_tree({"real.txt": b"content", "named": Link("real.txt")})
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not mirror's")
    dst = make_tree({"pointer": Link(outside)})

    result = run_mirror("copy", src / "named", dst / "pointer")

    assert result.returncode == 0, result.stderr
    assert not (dst / "pointer").is_symlink() and (dst / "pointer").read_bytes() == b"content"
    assert outside.read_bytes() == b"not mirror's", "never written through DST's link"


def test_a_file_whose_destination_folder_is_missing_exits_2(make_tree, tmp_path):
    src = make_tree({"a.txt": b"x"})

    result = run_mirror("copy", src / "a.txt", tmp_path / "missing" / "a.txt")

    assert result.returncode == 2
    assert "destination's folder" in result.stderr and "No such file" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_sync_of_a_file_copies_it_and_deletes_nothing(make_tree):
    src = make_tree({"a.txt": b"new", "b.txt": b"not named"})
    dst = make_tree({"a.txt": b"old", "c.txt": b"only in dst"})

    result = run_mirror("sync", src / "a.txt", dst)

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dst)) == ["a.txt", "c.txt"]
    assert (dst / "a.txt").read_bytes() == b"new"


def test_check_compares_one_file(make_tree):
    src = make_tree({"a.txt": b"same", "b.txt": b"longer"})
    dst = make_tree({"a.txt": b"same", "copy-of-b.txt": b"short"})
    os.utime(dst / "a.txt", ns=(os.stat(src / "a.txt").st_mtime_ns,) * 2)

    same = run_mirror("check", src / "a.txt", dst)
    differs = run_mirror("check", src / "b.txt", dst / "copy-of-b.txt")
    missing = run_mirror("check", src / "b.txt", dst)

    assert same.returncode == 0 and same.stdout == "", same.stderr
    assert differs.returncode == 1 and differs.stdout == "* copy-of-b.txt  (size differs)\n"
    assert missing.returncode == 1 and missing.stdout == "+ b.txt\n"


def test_dry_run_of_a_file_changes_nothing(make_tree, tmp_path):
    src = make_tree({"a.txt": b"x"})

    result = run_mirror("copy", "-n", "-v", src / "a.txt", tmp_path)

    assert result.returncode == 0
    assert "copy     a.txt  (missing)" in result.stdout
    assert not (tmp_path / "a.txt").exists()


def test_a_failed_file_keeps_the_old_version_and_leaves_no_temporary_file(make_tree, tmp_path):
    src = make_tree({"big.bin": os.urandom(2 << 20)})
    dst = make_tree({"big.bin": b"old version"})

    with file_size_limit(1 << 20):
        report = copy_tree(src / "big.bin", dst, Options(retries=0), engine=InlineEngine)

    assert report.files_failed == 1 and report.exit_code == 1
    assert (dst / "big.bin").read_bytes() == b"old version"
    assert temp_files(dst) == []


def test_the_library_takes_a_file_and_reports_its_progress(make_tree, tmp_path):
    src = make_tree({"f.bin": os.urandom(100_000)})
    events = []

    report = copy_tree(src / "f.bin", tmp_path, on_event=events.append)

    assert (report.files_copied, report.bytes_copied) == (1, 100_000)
    assert Discovered(1, 100_000) in events
    assert [event.path for event in events if isinstance(event, Finished)] == [b"f.bin"]


# --version and shell completion ------------------------------------------------------------

def test_version_names_mirror_python_and_the_core():
    python = ".".join(map(str, sys.version_info[:3]))
    for flag in ("--version", "-V"):
        result = run_mirror(flag)

        assert result.returncode == 0, result.stderr
        assert result.stdout == f"mirror {mirror.__version__} (Python {python}; core: {core.describe()})\n"
    assert "-V, --version" in run_mirror("--help").stdout


def completion(*args, home, **env) -> subprocess.CompletedProcess:
    """mirror's completion options, with typer told the shell instead of guessing it from the
    processes above, and a HOME of the test's own: nothing reaches the real shell files."""
    return run_mirror(*args, env={**os.environ, "HOME": os.fsdecode(home),
                                  "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1", **env})


@pytest.mark.parametrize("shell, hook", [("bash", "complete -o default -F _mirror_completion mirror"),
                                         ("zsh", "compdef _mirror_completion mirror")])
def test_show_completion_prints_the_script_for_bash_and_zsh(tmp_path, shell, hook):
    result = completion("--show-completion", shell, home=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "_mirror_completion()" in result.stdout and hook in result.stdout
    assert f"_MIRROR_COMPLETE=complete_{shell}" in result.stdout
    assert os.listdir(tmp_path) == []
    offered = run_mirror("--help").stdout
    assert "--install-completion" in offered and "--show-completion" in offered


def test_bash_completes_commands_and_options(tmp_path):
    script = completion("--show-completion", "bash", home=tmp_path).stdout
    (tmp_path / "mirror.bash").write_text(script)
    (tmp_path / "bin").mkdir()
    command = tmp_path / "bin" / "mirror"  # `mirror` on PATH: this checkout's code
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m mirror "$@"\n')
    command.chmod(0o755)
    ask = ('source "$1"; COMP_WORDS=($2); COMP_CWORD=$3; _mirror_completion mirror; '
           'printf "%s\\n" "${COMPREPLY[@]}"')

    def offered(words: str) -> list[str]:
        result = subprocess.run(["bash", "-c", ask, "bash", tmp_path / "mirror.bash", words,
                                 str(len(words.split()) - 1)], capture_output=True, text=True,
                                env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
        return sorted(result.stdout.split())

    assert offered("mirror s") == ["serve", "sync"]
    assert offered("mirror copy --ex") == ["--exclude", "--exclude-from"]


def test_install_completion_writes_into_home_only(tmp_path):
    result = completion("--install-completion", "bash", home=tmp_path)

    assert result.returncode == 0, result.stderr
    installed = tmp_path / ".bash_completions" / "mirror.sh"
    assert f"source '{installed}'" in (tmp_path / ".bashrc").read_text()
    assert "_mirror_completion" in installed.read_text()


# Help that says what things are ------------------------------------------------------------

def help_of(*command: str) -> str:
    result = run_mirror(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", ["copy", "sync", "check", "serve"])
def test_placeholders_say_what_they_are(command):
    text = help_of(command)

    assert "<" not in text, "no <str> or <int range>"
    wanted = {"serve": ["--port PORT", "--max-clients N", "--token-file FILE"],
              "sync": ["--jobs N", "--exclude PATTERN", "--include PATTERN", "--exclude-from FILE",
                       "--log-file FILE", "--retries N", "--max-delete N"]}
    for placeholder in wanted.get(command, ["--jobs N", "--exclude PATTERN", "--exclude-from FILE",
                                            "--log-file FILE"]):
        assert placeholder in text


@pytest.mark.parametrize("args, message", [
    (["copy", "-j", "abc"], "--jobs: 'abc' is not a whole number >= 1"),
    (["check", "--jobs", "0"], "--jobs: '0' is not a whole number >= 1"),
    (["sync", "--retries", "1.5"], "--retries: '1.5' is not a whole number >= 0"),
    (["sync", "--max-delete", "-1"], "--max-delete: '-1' is not a whole number >= 0"),
])
def test_a_bad_number_says_what_is_wanted(make_tree, tmp_path, args, message):
    src = make_tree({"a": b"1"})

    result = run_mirror(*args, src, tmp_path / "dst")

    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "dst").exists()


def test_check_help_describes_check():
    text = " ".join(help_of("check").split())

    assert "created when missing" not in text and "copied" not in text
    assert "--dry-run" not in text
    assert "SRC The folder, file or mirror://HOST:PORT/PATH to compare." in text
    assert "read, never changed" in text


def test_top_level_help_gives_each_command_whole():
    text = " ".join(help_of().split())

    assert "..." not in text.replace("COMMAND [ARGS]...", "")
    for line in ("copy Copy new and changed entries of SRC into DST; never delete.",
                 "sync Make DST identical to SRC: copy, then delete what SRC lacks.",
                 "check Compare SRC and DST: list what sync would change; exit 1 if any.",
                 "serve Serve a folder read-only to copy, sync and check on other hosts."):
        assert line in text


# rsync's habits ----------------------------------------------------------------------------

def test_archive_is_accepted_and_changes_nothing(make_tree, tmp_path):
    src = make_tree({"a/b.txt": File(b"hi", mode=0o600, mtime_ns=10**18), "link": Link("a/b.txt")})

    plain = run_mirror("copy", src, tmp_path / "plain")
    archive = run_mirror("copy", "-a", src, tmp_path / "archive")
    sync = run_mirror("sync", "--archive", src, tmp_path / "archive")
    check = run_mirror("check", "-a", src, tmp_path / "archive")

    assert [plain.returncode, archive.returncode, sync.returncode, check.returncode] == [0, 0, 0, 0]
    assert snapshot(tmp_path / "archive") == snapshot(tmp_path / "plain") == snapshot(src)
    for command in ("copy", "sync"):
        assert "always keeps what rsync -a keeps" in " ".join(help_of(command).split())


def test_sync_delete_is_accepted_with_a_note_that_sync_always_deletes(make_tree):
    src = make_tree({"a": b"1"})
    dst = make_tree({"a": b"1", "extra": b"x"})

    result = run_mirror("sync", "--delete", src, dst)
    quiet = run_mirror("sync", "--delete", "-q", src, dst)

    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "--delete" in line]
    assert notes == ["mirror: note: sync always deletes what SRC does not have; --delete changes nothing"]
    assert os.listdir(dst) == ["a"]
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert run_mirror("copy", "--delete", src, dst).returncode == 2, "copy never deletes"


# --json for refused runs -------------------------------------------------------------------

@pytest.mark.parametrize("case, code, error", [
    ("missing source", 2, "No such file or directory"),
    ("bad option", 2, "--jobs: 'abc' is not a whole number >= 1"),
    ("lock held", 3, "another mirror run is using"),
])
def test_refused_runs_print_their_json_too(make_tree, tmp_path, case, code, error):
    src = make_tree({"a": b"1"})
    dst = tmp_path / "dst"
    dst.mkdir()
    args = {"missing source": ["sync", tmp_path / "missing", dst],
            "bad option": ["sync", "-j", "abc", src, dst],
            "lock held": ["sync", src, dst]}[case]
    lock = os.open(dst, os.O_RDONLY)
    if case == "lock held":
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        result = run_mirror(*args, "--json")
    finally:
        os.close(lock)

    assert result.returncode == code
    summary = last_json(result.stdout)
    assert summary["exit_code"] == code and error in summary["error"]
    assert summary["files_copied"] == 0 and summary["mode"] == "sync"
    assert len(result.stdout.splitlines()) == 1


def test_zsh_completes_commands_and_the_script_parses(tmp_path):
    """What zsh's completion function asks mirror for (typer's protocol), and the script read
    by zsh itself when it is installed (CI installs it)."""
    asked = run_mirror(env={**os.environ, "_MIRROR_COMPLETE": "complete_zsh",
                            "_TYPER_COMPLETE_ARGS": "mirror copy --ex"})
    commands = run_mirror(env={**os.environ, "_MIRROR_COMPLETE": "complete_zsh",
                               "_TYPER_COMPLETE_ARGS": "mirror s"})

    assert '"--exclude"' in asked.stdout and '"--exclude-from"' in asked.stdout
    assert '"serve"' in commands.stdout and '"sync"' in commands.stdout and '"copy"' not in commands.stdout
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (apt-get install -y zsh): its parse of the script not checked")
    script = tmp_path / "mirror.zsh"
    script.write_text(completion("--show-completion", "zsh", home=tmp_path).stdout)
    parsed = subprocess.run([zsh, "-n", script], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
