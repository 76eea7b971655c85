"""The remote case: mirror serve and an rsync daemon, each behind bench.proxy, on a fresh ext4."""
from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import trees
from .cases import Case
from .loopfs import LoopFs
from .runner import CaseResult, Measurement, Target, Trash, median_ratios, slug, timed_run
from .tools import REPO_ROOT, Tool, mirror_missing, rsync_missing, tool_env

RTTS = (20, 50)                       # ms
JOBS = 8
MODULE = "src"                        # the rsync daemon's one read-only module
LINKS = {"capped": "link capped at 1 Gbit/s",
         "window": "uncapped link, 4 MiB window per stream"}
# Targets as time ratios (mirror / rsync, lower is better): speed >= Nx is a ratio <= 1/N.
SPEEDUP = {("files", "capped"): {20: 1.0, 50: 1.0}, ("files", "window"): {20: 2.0, 50: 3.0},
           ("big", "capped"): {20: 1 / 1.05, 50: 1 / 1.05},
           ("big", "window"): {20: 3.0, 50: 5.0},
           ("noop", "capped"): {20: 1 / 1.2, 50: 1 / 1.2},
           ("noop", "window"): {20: 1 / 1.2, 50: 1 / 1.2}}
LATENCY_COST = 1.10                   # (a): mirror at 50 ms <= 1.1 x mirror at 20 ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """True when a socket listens on port (read from /proc: a probe would be a client session)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_listening(port: int, process: subprocess.Popen, what: str, timeout: float = 20) -> None:
    """Return once something listens on port; RuntimeError if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on port {port} after {timeout:.0f} s")


def processes() -> dict[int, list[str]]:
    """Every process's /proc/PID/stat fields after the command name (state, ppid, pgrp, ...)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    found[int(entry)] = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of pid and all its descendants, live or reaped (from /proc)."""
    nodes = {node: (int(fields[1]), sum(map(int, fields[11:15]))) for node, fields in processes().items()}
    total, stack = 0, [pid]
    while stack:
        node = stack.pop()
        total += nodes.get(node, (0, 0))[1]
        stack.extend(child for child, (ppid, _cpu) in nodes.items() if ppid == node)
    return total / os.sysconf("SC_CLK_TCK")


def survivors(pgid: int) -> int:
    """How many live (not zombie) processes are still in process group pgid."""
    return sum(fields[0] != "Z" and int(fields[2]) == pgid for fields in processes().values())


class Service:
    """A background process (server or proxy) in its own session, its output in a log file."""

    def __init__(self, what: str, argv: list[str], log: Path, port: int | None = None) -> None:
        self.what, self.log = what, log
        self.handle = open(log, "wb")
        self.process = subprocess.Popen(argv, env=tool_env(), cwd=REPO_ROOT,
                                        stdout=subprocess.PIPE if port is None else self.handle,
                                        stderr=self.handle, start_new_session=True)
        try:
            if port is None:                 # the proxy prints its port once it listens
                words = self.process.stdout.readline().decode().split()
                if not words:
                    raise RuntimeError(f"{what} did not start: {self.tail()}")
                port = int(words[-1])
            else:
                wait_listening(port, self.process, what)
        except BaseException:
            self.stop()
            raise
        self.port = port

    def cpu(self) -> float:
        return tree_cpu(self.process.pid) if self.process.poll() is None else 0.0

    def stop(self) -> str | None:
        """SIGTERM, then SIGKILL after 10 s; a sentence when it did not stop cleanly."""
        problems = []
        if self.process.poll() is not None:
            problems.append(f"{self.what} had exited before the end of the case "
                            f"({self.gone()})")
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                problems.append(f"{self.what} did not stop within 10 s of SIGTERM (killed)")
        code = self.process.returncode
        if not problems and code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM, 20):
            problems.append(f"{self.what} exited with {code}: {self.tail()}")  # rsync 20: signal
        left = survivors(self.process.pid)
        if left:
            problems.append(f"{self.what}: {left} process(es) of its session outlived it "
                            f"(killed)")
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.stdout:
            self.process.stdout.close()
        self.handle.close()
        return "; ".join(problems) or None

    def gone(self) -> str | None:
        """None while the process runs; else its exit code and last log line."""
        if self.process.poll() is None:
            return None
        return f"exit code {self.process.returncode}; its last line: {self.tail()}"

    def tail(self, lines: int = 1) -> str:
        if not self.handle.closed:
            self.handle.flush()
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])[:400] if text else "(no output)"


_serve_reason: str | None = None
_serve_checked = False


def mirror_serve_missing() -> str | None:
    """None when `mirror serve --help` works in the checkout the bench times; else why not."""
    global _serve_reason, _serve_checked
    if not _serve_checked:
        _serve_checked = True
        reason = mirror_missing()
        if reason is None:
            done = subprocess.run([sys.executable, "-m", "mirror", "serve", "--help"],
                                  env=tool_env(), cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=False, timeout=60)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
                reason = (f"`mirror serve --help` exit {done.returncode} in {REPO_ROOT}: "
                          f"{tail[0].strip()[:160]}")
                print(f"  mirror has no remote transport here, its contenders are skipped: "
                      f"{reason}", flush=True)
        _serve_reason = reason
    return _serve_reason


class RemoteCase(Case):
    """One tree over one link model at 20 and 50 ms: mirror -j8 and rsync, each via a proxy."""

    uptodate = False                  # RemoteNoop: every round re-runs into an up-to-date DST

    def __init__(self, ctx, sub: str, link: str, tree: str, what: str) -> None:
        self.sub, self.link = sub, link
        self.ports: dict[str, int] = {}
        self.broken: dict[str, str] = {}          # label -> why its runs fail at once
        self.services: dict[str, Service] = {}
        tools, pairs, targets = [], [], []
        for rtt in RTTS:
            mirror, rsync = self._mirror(rtt), self._rsync(rtt)
            tools += [mirror, rsync]
            pairs.append((mirror.label, rsync.label))
            speed = SPEEDUP[(sub, link)][rtt]
            wording = (f">= {speed:g}x rsync's speed" if speed >= 1 else
                       f"<= {1 / speed:.3g}x rsync's time")
            targets.append(Target(mirror.label, rsync.label, 1 / speed,
                                  f"{rtt} ms: mirror {wording} (time ratio <= "
                                  f"{1 / speed:.3f})"))
        pairs += [(tools[2].label, tools[0].label), (tools[3].label, tools[1].label)]
        if sub == "files":
            targets.append(Target(tools[2].label, tools[0].label, LATENCY_COST,
                                  "20 -> 50 ms adds <= 10% to mirror's time"))
        super().__init__(ctx, f"remote-{sub}-{link}", f"{what}, {LINKS[link]}, RTT 20 and "
                         f"50 ms; mirror {'sync' if self.uptodate else 'copy'} -j{JOBS} vs rsync "
                         f"-a from a daemon", tree, tools, targets, pairs, rounds=3)
        self.fs: LoopFs | None = None
        self.logs = ctx.data / "logs" / self.name
        self.timeout = float(os.environ.get("BENCH_TIMEOUT", 120 if ctx.quick else 600))

    def _mirror(self, rtt: int) -> Tool:
        label = f"mirror {rtt}ms"
        command = "sync" if self.uptodate else "copy"

        def argv(_src: Path, dst: Path) -> list[str]:
            return [sys.executable, "-m", "mirror", command,
                    f"mirror://127.0.0.1:{self.ports[label]}/", str(dst),
                    "--no-progress", "--quiet", "--jobs", str(JOBS)]
        return Tool(label, argv, is_mirror=True)

    def _rsync(self, rtt: int) -> Tool:
        label = f"rsync {rtt}ms"

        def argv(_src: Path, dst: Path) -> list[str]:
            return ["rsync", "-a", f"rsync://127.0.0.1:{self.ports[label]}/{MODULE}/",
                    f"{dst}/"]
        return Tool(label, argv)

    def unavailable(self, tool: Tool) -> str | None:
        return mirror_serve_missing() if tool.is_mirror else rsync_missing()

    def setup(self, tools: list[Tool]) -> None:
        self.load_before = os.getloadavg()[0]
        copies = 1 + len(tools) * 6                # src, then 6 rounds' copies before trash
        size = self.spec.approx_bytes() * copies + 2**30
        self.fs = LoopFs(self.ctx.data, self.name, size, self.spec.files * copies * 2 + 10**4)
        if self.fs.mounted:
            root = self.fs.root
            self.trash = Trash(root / "trash")      # renames stay on the same filesystem
        else:
            root = self.ctx.data / "remote"
            self.notes_setup = [f"not on a fresh loop filesystem: {self.fs.problem}"]
        self.src = trees.build_tree(self.spec, root, self.trash.move)
        self.dst_root = root / "dst" / self.name
        self.dst_root.mkdir(parents=True, exist_ok=True)
        if self.ctx.warmup:
            trees.warm(self.src)
        self.logs.mkdir(parents=True, exist_ok=True)
        kinds = {"mirror" if tool.is_mirror else "rsync" for tool in tools}
        for kind in sorted(kinds):
            try:
                self.services[kind] = self._server(kind)
            except RuntimeError as error:
                for tool in tools:
                    if tool.is_mirror == (kind == "mirror"):
                        self.broken[tool.label] = f"server did not start: {error}"
        for tool in tools:
            kind = "mirror" if tool.is_mirror else "rsync"
            if kind not in self.services:
                continue
            rtt = tool.label.split()[-1].removesuffix("ms")
            try:
                proxy = Service(f"proxy for {tool.label}",
                                [sys.executable, "-m", "bench.proxy", "--listen", "0", "--to",
                                 f"127.0.0.1:{self.services[kind].port}", "--rtt-ms", rtt,
                                 "--model", self.link], self.logs / f"proxy-{slug(tool.label)}.log")
            except RuntimeError as error:
                self.broken[tool.label] = str(error)
                continue
            self.services[tool.label] = proxy
            self.ports[tool.label] = proxy.port
        if self.uptodate:
            for tool in tools:
                self._bring_up_to_date(tool)

    def _server(self, kind: str) -> Service:
        port = free_port()
        if kind == "rsync":
            conf = self.logs / "rsyncd.conf"
            conf.write_text(f"uid = root\ngid = root\nuse chroot = no\nmax connections = 0\n"
                            f"log file = {self.logs / 'rsyncd.log'}\n\n[{MODULE}]\n"
                            f"    path = {self.src}\n    read only = yes\n")
            argv = ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
                    "--address=127.0.0.1"]
            return Service("rsync daemon", argv, self.logs / "rsyncd.stderr", port)
        argv = [sys.executable, "-m", "mirror", "serve", str(self.src), "--bind", "127.0.0.1",
                "--port", str(port)]
        return Service("mirror serve", argv, self.logs / "mirror-serve.log", port)

    def synced_dst(self, tool: Tool) -> Path:
        return self.dst_root / f"{slug(tool.label)}-synced"

    def _bring_up_to_date(self, tool: Tool) -> None:
        if tool.label in self.broken:
            return
        dst = self.synced_dst(tool)
        try:
            done = subprocess.run(tool.argv(self.src, dst), env=tool_env(), cwd=REPO_ROOT,
                                  capture_output=True, text=True, check=False,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.broken[tool.label] = (f"preparing the up-to-date DST timed out after "
                                       f"{self.timeout:.0f} s")
            return
        problem = (f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
                   if done.returncode else trees_differ(self.src, dst))
        if problem:
            self.broken[tool.label] = f"preparing the up-to-date DST failed: {problem}"

    def prepare(self, tool: Tool, rnd: int) -> tuple[Path, Path]:
        if self.uptodate:
            return self.src, self.synced_dst(tool)
        dst = self.dst_root / f"{slug(tool.label)}-r{rnd}"
        self.trash.move(dst)
        margin = 256 * trees.MIB if self.fs and self.fs.mounted else 16 * 2**30
        self.trash.ensure_free(self.spec.approx_bytes(), margin)
        return self.src, dst

    def run(self, tool: Tool, src: Path, dst: Path, rnd: int) -> Measurement:
        if tool.label in self.broken:
            return Measurement(tool.label, rnd, 0.0, ok=False,
                               error=f"not run: {self.broken[tool.label]}")
        kind = "mirror" if tool.is_mirror else "rsync"
        for service in (self.services[kind], self.services[tool.label]):
            if service.gone():
                self.broken[tool.label] = f"{service.what} is gone: {service.gone()}"
                return Measurement(tool.label, rnd, 0.0, ok=False,
                                   error=f"not run: {self.broken[tool.label]}")
        watched = {"server_cpu": self.services[kind],
                   "proxy_cpu": self.services[tool.label]}
        before = {key: service.cpu() for key, service in watched.items()}
        measurement = timed_run(tool, src, dst, rnd, self.timeout)
        measurement.extra = {key: round(service.cpu() - before[key], 3)
                             for key, service in watched.items()}
        for service in watched.values():
            if service.gone():
                measurement.error += f" (meanwhile {service.what} exited: {service.gone()})"
        if measurement.error.startswith("timed out"):
            self.broken[tool.label] = f"timed out in round {rnd}"
        return measurement

    def verify(self, tool: Tool, src: Path, dst: Path, rnd: int) -> str | None:
        return trees_differ(src, dst) if rnd == 1 else None

    def after(self, tool: Tool, rnd: int, dst: Path) -> None:
        if not self.uptodate:
            self.trash.move(dst, self.spec.files)

    def teardown(self, result: CaseResult) -> None:
        result.notes += getattr(self, "notes_setup", [])
        if hasattr(self, "load_before"):
            result.notes.append(f"load average (1 min) {self.load_before:.2f} at the case's "
                                f"start, {os.getloadavg()[0]:.2f} at its end (2 CPUs: anything "
                                f"else running skews these figures)")
        result.notes.append("time ratios are mirror time / rsync time (lower is better); "
                            "cpu s is the client's; servers' and proxies' CPU per run are "
                            "in results.json (extra)")
        speeds = []
        for rtt in RTTS:
            ratio = median_ratios(result, f"rsync {rtt}ms", f"mirror {rtt}ms")["median"]
            if ratio:
                speeds.append(f"{rtt} ms {ratio:.2f}x")
        if speeds:
            result.notes.append("mirror's speed over rsync (median of per-round rsync time "
                                "/ mirror time): " + ", ".join(speeds))
        for label in result.labels:
            cpu = [m.extra.get("server_cpu", 0) for m in result.measurements
                   if m.label == label and m.ok and m.extra]
            proxy = [m.extra.get("proxy_cpu", 0) for m in result.measurements
                     if m.label == label and m.ok and m.extra]
            if cpu:
                result.notes.append(f"{label}: median CPU s per run, server "
                                    f"{statistics.median(cpu):.2f}, proxy "
                                    f"{statistics.median(proxy):.2f}")
        for label, reason in self.broken.items():
            result.notes.append(f"{label}: {reason}")
        for key, service in reversed(list(self.services.items())):
            problem = service.stop()
            if problem:
                result.notes.append(problem)
            if key in self.ports:
                result.notes.append(f"{key}: {service.tail()}")
            elif key == "mirror":
                lines = service.log.read_text(errors="replace").strip().splitlines()
                result.notes.append(f"mirror serve logged {len(lines)} lines; last: "
                                    f"{lines[-1][:200] if lines else '(none)'}")
        self.services.clear()
        result.notes.append(f"server and proxy logs in {self.logs}")
        if self.fs:
            if self.fs.mounted:
                result.notes.append(f"SRC and DST on a fresh ext4 (no journal) loop-mounted "
                                    f"at {self.fs.root}, deleted after the case")
            self.fs.close()


class RemoteNoop(RemoteCase):
    """(c): each tool re-runs into its own DST that it brought up to date once, untimed."""

    uptodate = True


def trees_differ(src: Path, dst: Path) -> str | None:
    """None when dst holds exactly src's files with the same bytes, mode and mtime; else what."""
    want, got = trees.tree_summary(src), trees.tree_summary(dst) if dst.is_dir() else None
    if want != got:
        return f"(files, folders, bytes) {got} != source {want}"
    for folder, _dirs, files in os.walk(src):
        for name in files:
            a = os.path.join(folder, name)
            b = os.path.join(dst, os.path.relpath(a, src))
            sa, sb = os.stat(a), os.stat(b)
            if (sa.st_mtime_ns, sa.st_mode) != (sb.st_mtime_ns, sb.st_mode):
                return (f"{os.path.relpath(a, src)}: (mtime_ns, mode) {sb.st_mtime_ns}, "
                        f"{oct(sb.st_mode)} != source {sa.st_mtime_ns}, {oct(sa.st_mode)}")
            with open(a, "rb") as fa, open(b, "rb") as fb:
                while True:
                    block_a, block_b = fa.read(trees.CHUNK), fb.read(trees.CHUNK)
                    if block_a != block_b:
                        return f"{os.path.relpath(a, src)}: content differs"
                    if not block_a:
                        break
    return None


def remote_cases(ctx) -> list[RemoteCase]:
    """(a) files, (b) big, (c) noop of (a), each over the capped and the long fat link."""
    files, big = ctx.specs["remote-files"], ctx.specs["remote-big"]
    files_text = (f"{files.files:,} files of {files.min_size // trees.KIB}-"
                  f"{files.max_size // trees.KIB} KiB in {files.folders} folders")
    big_text = f"{big.files} files of {big.max_size // trees.MIB} MiB"
    cases = []
    for sub, kind, tree, what in (
            ("files", RemoteCase, "remote-files", f"first copy, {files_text}"),
            ("big", RemoteCase, "remote-big", f"first copy, {big_text}"),
            ("noop", RemoteNoop, "remote-files", f"no-op re-sync, {files_text}")):
        for link in LINKS:
            cases.append(kind(ctx, sub, link, tree, what))
    return cases
