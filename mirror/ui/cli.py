"""The command line: arguments -> Options -> the library; the one place errors become exit codes."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from .. import __version__
from ..errors import Interrupted, MirrorError
from ..model import EngineChoice, Mode
from ..options import Options, read_patterns

EXIT_CODES = """Exit codes: 0 success (check: identical); 1 partial: some entries failed, --max-delete
stopped deletions, or (check) the trees differ; 2 usage error or bad input, nothing changed;
3 another mirror run holds the lock on DST; 129 hung up (SIGHUP: the terminal closed); 130
interrupted (SIGINT); 143 terminated (SIGTERM)."""

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Copy, sync and check directory trees in parallel.\n\n" + EXIT_CODES)


PROG = "mirror"  # also under `python -m mirror`: the name completion and usage lines give


def version_line() -> str:
    from ..core import describe  # the compiled core, or why the pure-Python one runs
    return f"{PROG} {__version__} (Python {'.'.join(map(str, sys.version_info[:3]))}; core: {describe()})"


def show_version(wanted: bool) -> None:
    if wanted:
        print(version_line())
        raise typer.Exit()


@app.callback()
def options_of_mirror(version: Annotated[bool, typer.Option(
        "--version", "-V", is_eager=True, callback=show_version,
        help="Print mirror's version, Python's and the core's, and exit.")] = False) -> None:
    pass


def whole_number(option: str, least: int, most: int | None = None):
    """The parser of an option's N: a bad value says what is wanted, in the option's name."""
    wanted = f"a whole number >= {least}" if most is None else f"a whole number from {least} to {most}"

    def parse(text) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            value = None
        if value is None or value < least or (most is not None and value > most):
            raise typer.BadParameter(f"{text!r} is not {wanted}", param_hint=option)
        return value
    return parse


Src = Annotated[str, typer.Argument(metavar="SRC", show_default=False, help=(
    "Source folder, whose contents are copied; or one file; or mirror://HOST:PORT/PATH "
    "served by `mirror serve`."))]
Dst = Annotated[str, typer.Argument(metavar="DST", show_default=False, help=(
    "Destination folder, created when missing. For a file SRC: the folder to put it in, or "
    "the file's own path."))]
CheckSrc = Annotated[str, typer.Argument(metavar="SRC", show_default=False, help=(
    "The folder, file or mirror://HOST:PORT/PATH to compare."))]
CheckDst = Annotated[str, typer.Argument(metavar="DST", show_default=False, help=(
    "The folder (or file) to compare it with; read, never changed. For a file SRC and a "
    "folder DST: DST/NAME."))]
Jobs = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", metavar="N", parser=whole_number("--jobs", 1),
    help="Worker processes [default: CPUs].")]
DryRun = Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would be done; change nothing.")]
Checksum = Annotated[bool, typer.Option("--checksum", "-c", help="Compare content (xxh3-128), not size+mtime.")]
Exclude = Annotated[Optional[list[str]], typer.Option(
    "--exclude", metavar="PATTERN",
    help="Skip paths matching this gitignore pattern (relative to SRC). Repeatable.")]
Include = Annotated[Optional[list[str]], typer.Option(
    "--include", metavar="PATTERN",
    help="Take back paths an --exclude matched (like !pattern). Repeatable.")]
ExcludeFrom = Annotated[Optional[str], typer.Option(
    "--exclude-from", metavar="FILE",
    help="Read exclude patterns from a file, one a line (gitignore syntax).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="One line per action, with its reason.")]
ShowProgress = Annotated[Optional[bool], typer.Option(
    "--progress/--no-progress", help="Progress on stderr [default: when stderr is a terminal].")]
Json = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object, the last stdout line.")]
LogPath = Annotated[Optional[str], typer.Option(
    "--log-file", metavar="FILE", help="Append actions and the summary to this file.")]
HardLinks = Annotated[bool, typer.Option("--hard-links", "-H", help="Keep hard links among copied files.")]
Retries = Annotated[int, typer.Option(
    "--retries", metavar="N", parser=whole_number("--retries", 0),
    help="Try failed entries again this many times, after a short pause.")]
AllowEmptySrc = Annotated[bool, typer.Option(
    "--allow-empty-src", help="Let an empty SRC empty a non-empty DST (refused by default).")]
DeleteExcluded = Annotated[bool, typer.Option(
    "--delete-excluded", help="Delete excluded entries in DST too (kept by default).")]
TokenFile = Annotated[Optional[str], typer.Option(
    "--token-file", metavar="FILE", help="mirror:// SRC: the server's token (one line; chmod 600).")]
TlsCa = Annotated[Optional[str], typer.Option(
    "--tls-ca", metavar="FILE", help="mirror:// SRC: connect with TLS, trusting the certificates in FILE.")]
Sparse = Annotated[bool, typer.Option(
    "--sparse/--no-sparse", help="Keep holes in sparse files as holes (--no-sparse writes every byte).")]
Xattrs = Annotated[bool, typer.Option("--xattrs", "-X", help=(
    "Keep extended attributes (user.*; trusted.* and security.* as root)."))]
Acls = Annotated[bool, typer.Option("--acls", "-A", help="Keep POSIX ACLs (access and default).")]
OneFileSystem = Annotated[bool, typer.Option("--one-file-system", "-x", help=(
    "Do not cross mount points inside SRC: a mount point's folder is created, empty."))]
Strict = Annotated[bool, typer.Option("--strict", help=(
    "Count what sync cannot copy (sockets; device files without root) as differences: exit 1 "
    "when SRC has any. Without it they are listed with ! but do not change the exit code."))]
CompareXattrs = Annotated[bool, typer.Option("--xattrs", "-X", help="Compare extended attributes too.")]
CompareAcls = Annotated[bool, typer.Option("--acls", "-A", help="Compare POSIX ACLs too.")]
CompareHardLinks = Annotated[bool, typer.Option("--hard-links", "-H", help=(
    "Compare hard-link groups too (what copy -H keeps)."))]
CheckOneFileSystem = Annotated[bool, typer.Option("--one-file-system", "-x", help=(
    "Do not cross mount points inside SRC (what copy -x copies)."))]
Archive = Annotated[bool, typer.Option("--archive", "-a", help=(
    "Accepted for rsync's habit; changes nothing: mirror always keeps what rsync -a keeps "
    "(permissions, times, symlinks; owners and device files as root)."))]
CheckArchive = Annotated[bool, typer.Option("--archive", "-a", help=(
    "Accepted for rsync's habit; changes nothing: check always compares what rsync -a keeps."))]
AlwaysDeletes = Annotated[bool, typer.Option("--delete", help=(
    "Accepted for rsync's habit; changes nothing: sync always deletes what SRC does not have."))]
Engine = Annotated[EngineChoice, typer.Option(
    "--engine", metavar="pool|mpi|auto", help="pool: worker processes on this machine (--jobs); mpi: the other ranks of an "
    "MPI job, launched as mpiexec -n N python -m mpi4py.futures -m mirror ... (--jobs is unused); "
    "auto: mpi in such a job, else pool.")]
MaxDelete = Annotated[Optional[int], typer.Option(
    "--max-delete", metavar="N", parser=whole_number("--max-delete", 0),
    help="If more than N entries would be deleted, delete none (exit 1).")]


@dataclass(frozen=True)
class View:
    """How a run is shown: presentation settings, kept apart from Options."""

    quiet: bool
    verbose: bool
    progress: bool | None
    json: bool
    log_file: str | None
    print0: bool = False


@dataclass(frozen=True)
class Keep:
    """What a copy keeps beyond rsync -a's set (and how check compares it)."""

    sparse: bool = True
    xattrs: bool = False
    acls: bool = False
    one_file_system: bool = False
    strict: bool = False


def build_options(jobs: int | None, dry_run: bool, checksum: bool, exclude: list[str] | None,
                  include: list[str] | None, exclude_from: str | None, hard_links: bool,
                  retries: int = 0, max_delete: int | None = None,
                  allow_empty_src: bool = False, delete_excluded: bool = False,
                  keep: Keep = Keep()) -> Options:
    excludes = [*(exclude or ()), *(read_patterns(exclude_from) if exclude_from else ())]
    return Options(jobs=jobs or 0, dry_run=dry_run, checksum=checksum, excludes=tuple(excludes),
                   includes=tuple(include or ()), hard_links=hard_links, retries=retries,
                   max_delete=max_delete, allow_empty_src=allow_empty_src,
                   delete_excluded=delete_excluded, sparse=keep.sparse, xattrs=keep.xattrs,
                   acls=keep.acls, one_file_system=keep.one_file_system, strict=keep.strict)


@app.command(short_help="Copy new and changed entries of SRC into DST; never delete.",
             epilog="Examples: mirror copy ~/photos /mnt/backup/photos; "
             "mirror copy -n -v src dst (show what would be copied, and why)\n\n" + EXIT_CODES)
def copy(src: Src, dst: Dst, jobs: Jobs = None, dry_run: DryRun = False, checksum: Checksum = False,
         exclude: Exclude = None, include: Include = None, exclude_from: ExcludeFrom = None,
         hard_links: HardLinks = False, retries: Retries = 2, quiet: Quiet = False,
         verbose: Verbose = False, progress: ShowProgress = None, json_summary: Json = False,
         log_file: LogPath = None, token_file: TokenFile = None, tls_ca: TlsCa = None,
         sparse: Sparse = True, xattrs: Xattrs = False, acls: Acls = False,
         one_file_system: OneFileSystem = False, archive: Archive = False,
         engine: Engine = EngineChoice.AUTO) -> None:
    """Copy new and changed entries of SRC into DST. Never deletes anything in DST."""
    view = View(quiet, verbose, progress, json_summary, log_file)
    keep = Keep(sparse, xattrs, acls, one_file_system)
    execute(Mode.COPY, Source(src, token_file, tls_ca), dst, view, lambda: build_options(
        jobs, dry_run, checksum, exclude, include, exclude_from, hard_links, retries, keep=keep), engine)


@app.command(short_help="Make DST identical to SRC: copy, then delete what SRC lacks.",
             epilog="Examples: mirror sync /srv/data /mnt/replica; "
             "mirror sync --max-delete 100 -q --log-file /var/log/mirror.log src dst (for cron)\n\n"
             + EXIT_CODES)
def sync(src: Src, dst: Dst, jobs: Jobs = None, dry_run: DryRun = False, checksum: Checksum = False,
         exclude: Exclude = None, include: Include = None, exclude_from: ExcludeFrom = None,
         hard_links: HardLinks = False, retries: Retries = 2, max_delete: MaxDelete = None,
         allow_empty_src: AllowEmptySrc = False, delete_excluded: DeleteExcluded = False,
         quiet: Quiet = False, verbose: Verbose = False,
         progress: ShowProgress = None, json_summary: Json = False, log_file: LogPath = None,
         token_file: TokenFile = None, tls_ca: TlsCa = None, sparse: Sparse = True,
         xattrs: Xattrs = False, acls: Acls = False, one_file_system: OneFileSystem = False,
         archive: Archive = False, delete: AlwaysDeletes = False,
         engine: Engine = EngineChoice.AUTO) -> None:
    """Make DST identical to SRC: copy, then delete what SRC does not have.

    Deletes nothing when any entry failed to copy; a folder that a file, link or special
    file replaces is a deletion too (counted by --max-delete and --dry-run). Excluded paths
    in DST are kept, with the folders holding them, unless --delete-excluded. An empty SRC
    never empties a non-empty DST unless --allow-empty-src. A file as SRC is copied as by
    copy: nothing is deleted.
    """
    if delete and not quiet:  # rsync needs it; mirror's sync is rsync --delete already
        print("mirror: note: sync always deletes what SRC does not have; --delete changes nothing",
              file=sys.stderr)
    view = View(quiet, verbose, progress, json_summary, log_file)
    keep = Keep(sparse, xattrs, acls, one_file_system)
    execute(Mode.SYNC, Source(src, token_file, tls_ca), dst, view, lambda: build_options(
        jobs, dry_run, checksum, exclude, include, exclude_from, hard_links, retries, max_delete,
        allow_empty_src, delete_excluded, keep), engine)


Print0 = Annotated[bool, typer.Option(
    "--print0", "-0", help="List each difference as MARKER, a space and the path's raw bytes, "
    "ended by NUL instead of a newline (for xargs -0). Not with --json, which lists them too.")]


@app.command(short_help="Compare SRC and DST: list what sync would change; exit 1 if any.",
             epilog="Markers: + only in SRC, - only in DST, * differs (reason given), "
             "! could not be read.\n\nExample: mirror check -c /srv/data /mnt/replica\n\n" + EXIT_CODES)
def check(src: CheckSrc, dst: CheckDst, jobs: Jobs = None, checksum: Checksum = False,
          exclude: Exclude = None, include: Include = None, exclude_from: ExcludeFrom = None,
          hard_links: CompareHardLinks = False, quiet: Quiet = False,
          progress: ShowProgress = None, json_summary: Json = False, log_file: LogPath = None,
          print0: Print0 = False, token_file: TokenFile = None, tls_ca: TlsCa = None,
          xattrs: CompareXattrs = False, acls: CompareAcls = False,
          one_file_system: CheckOneFileSystem = False, strict: Strict = False,
          archive: CheckArchive = False, engine: Engine = EngineChoice.AUTO) -> None:
    """Compare SRC and DST in parallel (--jobs workers): list what sync would change, one line
    a difference. Changes nothing. Exit 0 when identical, 1 when not."""
    view = View(quiet, False, progress, json_summary, log_file, print0)

    def options() -> Options:
        if print0 and json_summary:  # both want stdout: NUL records would garble the JSON line
            raise MirrorError("--print0 and --json cannot be used together: the JSON lists the "
                              "differences too (difference_list)")
        return build_options(jobs, False, checksum, exclude, include, exclude_from, hard_links,
                             keep=Keep(True, xattrs, acls, one_file_system, strict))

    execute(Mode.CHECK, Source(src, token_file, tls_ca), dst, view, options, engine)


@dataclass(frozen=True)
class Source:
    """SRC as typed, and how to reach it when it is a mirror:// URL."""

    path: str
    token_file: str | None = None
    tls_ca: str | None = None

    def open(self, dst: str):
        """The path, or the remote tree of a URL; MirrorError for options that do not fit."""
        from ..remote import is_remote, refuse_remote_dst, remote_tree
        refuse_remote_dst(dst)
        if is_remote(self.path):
            return remote_tree(self.path, self.token_file, self.tls_ca)
        if self.token_file or self.tls_ca:
            raise MirrorError("--token-file and --tls-ca are for a mirror:// SRC")
        return self.path


def execute(mode: Mode, src: Source, dst: str, view: View, make_options,
            engine: EngineChoice = EngineChoice.AUTO) -> None:
    """Run one command and leave with its exit code; no traceback for anything a user did."""
    from ..errors import Terminated
    try:
        from .. import engine_for
        from .session import Session
        with Session(view) as session:
            options = make_options()
            factory = engine_for(engine)  # refused MPI: before SRC is opened or DST made
            report = session.run(mode, src.open(dst), dst, options, factory)
            code = report.exit_code
    except Interrupted as stop:
        code = stop.exit_code
    except MirrorError as error:
        print(f"mirror: error: {error}", file=sys.stderr)
        code = error.exit_code
        if view.json and not view.print0:  # with -0, stdout's reader wants NUL records
            print(refusal_json(mode, code, str(error)))
    except (KeyboardInterrupt, Terminated) as stop:  # before the session could take it
        from .session import stopped_early
        code = stopped_early(stop, mode, view)
    raise typer.Exit(code)


def refusal_json(mode: Mode, code: int, error: str) -> str:
    """--json of a run refused before it began (exit 2 or 3): the summary's keys, nothing done
    (no worker ran), and `error` saying why; scripts read one format."""
    import json
    from ..report import Report
    summary = Report(mode, 0, False).to_dict()
    summary.update(exit_code=code, error=error)
    return json.dumps(summary)


Root = Annotated[str, typer.Argument(metavar="ROOT", show_default=False, help="The folder to serve.")]
Bind = Annotated[str, typer.Option("--bind", metavar="ADDRESS", help=(
    "Address to listen on; anything but loopback needs --token-file."))]
Port = Annotated[int, typer.Option(
    "--port", metavar="PORT", parser=whole_number("--port", 0, 65535), help="TCP port (0: any free one).")]
ServeToken = Annotated[Optional[str], typer.Option(
    "--token-file", metavar="FILE", help="Clients must prove they hold this token (one line; chmod 600).")]
TlsCert = Annotated[Optional[str], typer.Option("--tls-cert", metavar="FILE", help="Serve over TLS with this certificate (PEM).")]
TlsKey = Annotated[Optional[str], typer.Option("--tls-key", metavar="FILE", help="The certificate's private key (PEM).")]
MaxClients = Annotated[int, typer.Option(
    "--max-clients", metavar="N", parser=whole_number("--max-clients", 1),
    help="Client runs served at once (each with a connection a worker).")]


@app.command(short_help="Serve a folder read-only to copy, sync and check on other hosts.",
             epilog="Example: mirror serve /srv/data --bind 0.0.0.0 --token-file /etc/mirror/token; "
             "then, elsewhere: mirror sync --token-file token mirror://server:8730/ /backup/data\n\n"
             "Exit codes: 0 stopped by SIGINT or SIGTERM; 2 cannot start (bad ROOT, port in use, "
             "no token for a network address).")
def serve(root: Root, bind: Bind = "127.0.0.1", port: Port = 8730, token_file: ServeToken = None,
          tls_cert: TlsCert = None, tls_key: TlsKey = None, max_clients: MaxClients = 16) -> None:
    """Serve ROOT read-only over TCP to `mirror copy/sync/check mirror://HOST:PORT/PATH`.

    Paths are confined to ROOT: symlinks are served as links, never followed. One log line
    per client run on stderr.
    """
    from ..errors import Terminated
    from ..remote import log_line, serve as run_server
    try:
        run_server(root, bind, port, token_file, tls_cert, tls_key, max_clients)
    except MirrorError as error:
        print(f"mirror: error: {error}", file=sys.stderr)
        raise typer.Exit(error.exit_code)
    except (KeyboardInterrupt, Terminated) as stop:
        from ..errors import signal_number
        log_line(f"stopped by signal {signal_number(stop)}")
    raise typer.Exit(0)


def main() -> None:
    """The `mirror` script; `python -m mirror` caught stop signals before it imported this."""
    from ..errors import Terminated, catch_stop_signals
    catch_stop_signals()
    try:
        from .session import guard_output
        guard_output()
        try:
            code = app(prog_name=PROG, standalone_mode=False)
        except USAGE_ERRORS as error:  # bad arguments: what typer would print, and --json
            error.show()
            code = error.exit_code
            from .session import read_view
            mode, view = read_view(sys.argv[1:])
            if view.json and not {"-0", "--print0"} & set(sys.argv):
                print(refusal_json(mode, code, error.format_message()))
    except (KeyboardInterrupt, Terminated) as stop:  # while typer read the arguments
        from .session import stopped_early
        sys.exit(stopped_early(stop))
    sys.exit(code or 0)


# click's ClickException, from whichever click this typer brings (its own copy since 0.2x)
USAGE_ERRORS = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")
