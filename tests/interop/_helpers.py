"""Reusable machinery for interop tests: find a client, pick loopback ports, run a process.

Interop tests start real third-party BitTorrent software. The rules (see ../shared/INTEROP.md):
traffic only to 127.0.0.0/8 or ::1, every wait bounded, and we stop only the processes we started,
by their PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

__all__ = [
    "CLIENTS",
    "ClientNotReadyError",
    "RunningProcess",
    "StartProcess",
    "Tracker",
    "ci_enabled",
    "file_exists",
    "free_port",
    "recv_exactly",
    "require_client",
    "running_process",
    "start_opentracker",
    "tcp_listening",
    "udp_request",
    "wait_for",
]

# name -> how to install it. A name is a binary on PATH, or a Python module (_PYTHON_MODULES).
CLIENTS: dict[str, str] = {
    "libtorrent": "the PyPI package libtorrent==2.1.1 (`uv sync --group interop`)",
    "aria2c": "the apt package aria2",
    "opentracker": "the apt package opentracker",
    "qbittorrent-nox": "the apt package qbittorrent-nox",
    "rtorrent": "the apt package rtorrent",
    "transmission-cli": "the apt package transmission-cli",
    "transmission-create": "the apt package transmission-cli",
    "transmission-show": "the apt package transmission-cli",
    "transmission-remote": "the apt package transmission-cli",
    "transmission-daemon": "the apt package transmission-daemon",
    "mktorrent": "the apt package mktorrent",
    "ctorrent": "the apt package ctorrent",
    "microsocks": "the apt package microsocks",
    "danted": "the apt package dante-server",
}
# Clients that are Python modules (run in a subprocess with sys.executable), not binaries.
_PYTHON_MODULES = frozenset({"libtorrent"})

_TRUE = frozenset({"1", "true", "yes", "on"})


def ci_enabled() -> bool:
    """True when the environment variable CI is set to a true value (CI=true, CI=1, ...)."""
    return os.environ.get("CI", "").strip().lower() in _TRUE


def require_client(name: str) -> str:
    """Return the path of client `name` (a binary on PATH, or a Python module's origin).

    A missing client fails the test in CI (CI=true), where .ci/run installs every client, and
    skips it elsewhere with a message naming what to install.
    """
    if name in _PYTHON_MODULES:
        spec = importlib.util.find_spec(name)
        found = spec.origin if spec is not None else None
    else:
        found = shutil.which(name)
    if found is not None:
        return found
    how = CLIENTS.get(name, f"whatever provides {name!r}")
    message = f"interop client {name!r} is not installed: install {how}"
    if ci_enabled():
        pytest.fail(f"{message} (CI is set, so a missing client is a failure)", pytrace=False)
    pytest.skip(message)


# Ports handed out by this process, so two calls never return the same one.
_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1", *, tcp: bool = True, udp: bool = False) -> int:
    """Pick a port on `host` that is free now for TCP and/or UDP (bind port 0, then release).

    Another program could take it before our client binds it; on loopback in a test run that is
    rare enough. `host` may be any 127.0.0.X address.
    """
    if not (tcp or udp):
        raise ValueError("ask for a TCP port, a UDP port, or both")
    first = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    for _ in range(50):
        with socket.socket(socket.AF_INET, first) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            if (host, port) in _handed_out:
                continue
            if tcp and udp:
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                        u.bind((host, port))
                except OSError:
                    continue
        _handed_out.add((host, port))
        return port
    raise RuntimeError(f"found no free port on {host}")


class ClientNotReadyError(RuntimeError):
    """A started process exited early or did not become ready in time."""


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll `condition` until it is true; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout:g} s")
        time.sleep(interval)


def tcp_listening(host: str, port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on (host, port)."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def file_exists(path: Path) -> Callable[[], bool]:
    """A readiness check: `path` exists (write it atomically: to a temporary name, then rename)."""
    return path.exists


@dataclass
class RunningProcess:
    """A process started by `running_process`; its output goes to two log files."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self, limit: int = 4000) -> str:
        """The tails of stdout and stderr, for failure messages."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                text = path.read_bytes()[-limit:].decode("utf-8", "replace")
            except OSError as exc:
                text = f"<unreadable: {exc}>"
            parts.append(f"--- {self.name} {label} ({path}) ---\n{text}")
        return "\n".join(parts)

    def wait(self, timeout: float) -> int:
        """Wait for a process that is expected to exit by itself; raise TimeoutError if it doesn't.

        Afterwards the process counts as stopped, so its exit is not reported as a death.
        """
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.name} (pid {self.pid}) still running after {timeout:g} s\n{self.logs()}"
            ) from None
        self.stopped = True
        return status

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the process by its PID: SIGTERM, then SIGKILL after `grace` seconds.

        Returns its exit status (negative for a signal), or None if it could not be reaped.
        """
        self.stopped = True
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        try:
            return self.popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return None


class StartProcess(Protocol):
    """The `start_process` fixture: `running_process` whose stop is left to the fixture."""

    def __call__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 15.0,
        grace: float = 5.0,
        name: str | None = None,
        log_dir: Path | None = None,
    ) -> RunningProcess: ...


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL if the test process dies (Linux only).

    The kernel clears this when the child changes its user (opentracker does, with -u), so it is a
    safety net, not the way we stop processes. None off the main thread: the kernel sends the
    signal when the *thread* that forked the child exits, and a trio worker thread
    (``trio.to_thread``, ``trio.lowlevel.open_process``) exits after 10 idle seconds, which
    killed clients in the middle of slow tests (rtorrent "died during the test with status -9").
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return preexec


@contextlib.contextmanager
def running_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
    ready_timeout: float = 15.0,
    grace: float = 5.0,
    name: str | None = None,
    log_dir: Path | None = None,
) -> Iterator[RunningProcess]:
    """Start `argv` in `cwd`, wait until `ready()` is true, and stop it by PID on exit.

    - The program must stay in the foreground (no daemonising fork), so its PID is the one we stop.
    - stdin is /dev/null; stdout and stderr go to `<name>.stdout.log` / `<name>.stderr.log` in
      `log_dir` (default `cwd`), and their tails are in every error message.
    - `env` replaces the environment when given (start from `os.environ` yourself to extend it).
    - `ready` is polled until true, for at most `ready_timeout` seconds; if the process exits first
      or time runs out, it is stopped and `ClientNotReadyError` is raised.
    - On exit it gets SIGTERM, and SIGKILL after `grace` seconds. If the body succeeded but the
      process had already died on its own, `ClientNotReadyError` is raised with its logs (use
      `proc.wait(timeout)` for a process that is meant to exit).
    """
    args = [os.fspath(a) for a in argv]
    label = name or Path(args[0]).name
    logs = log_dir or cwd
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path = logs / f"{label}.stdout.log"
    stderr_path = logs / f"{label}.stderr.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which stops it
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only calls prctl
        )
    proc = RunningProcess(label, args, popen, stdout_path, stderr_path)
    try:
        if ready is not None:
            deadline = time.monotonic() + ready_timeout
            while not ready():
                if not proc.alive():
                    raise ClientNotReadyError(
                        f"{label} (pid {proc.pid}) exited with status {popen.returncode} "
                        f"before it was ready\nargv: {args}\n{proc.logs()}"
                    )
                if time.monotonic() >= deadline:
                    raise ClientNotReadyError(
                        f"{label} (pid {proc.pid}) not ready within {ready_timeout:g} s\n"
                        f"argv: {args}\n{proc.logs()}"
                    )
                time.sleep(0.05)
        yield proc
        if not proc.stopped and not proc.alive():
            raise ClientNotReadyError(
                f"{label} (pid {proc.pid}) died during the test with status "
                f"{popen.returncode}\n{proc.logs()}"
            )
    finally:
        proc.stop(grace)


def recv_exactly(sock: socket.socket, n: int, timeout: float) -> bytes:
    """Read exactly `n` bytes from a stream socket within `timeout` seconds in total.

    Raises EOFError if the peer closes first and TimeoutError if time runs out; both messages
    carry what was received so far.
    """
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(buf)} of {n} bytes in {timeout:g} s: {bytes(buf)!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            continue
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes: {bytes(buf)!r}")
        buf += chunk
    return bytes(buf)


def udp_request(
    sock: socket.socket,
    data: bytes,
    addr: tuple[str, int],
    *,
    attempts: int = 4,
    timeout: float = 1.0,
    accept: Callable[[bytes], bool] = lambda reply: True,
) -> bytes:
    """Send a datagram and return the first reply from `addr` that `accept`s, resending it up to
    `attempts` times with `timeout` seconds each (UDP may drop; a just-started server may not be
    bound yet)."""
    for _ in range(attempts):
        sock.sendto(data, addr)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                reply, source = sock.recvfrom(65536)
            except TimeoutError:
                break
            except ConnectionRefusedError:  # ICMP port unreachable: not bound yet
                time.sleep(min(0.1, max(remaining, 0.0)))
                break
            if source[:2] == addr and accept(reply):
                return reply
    raise TimeoutError(f"no reply from {addr} after {attempts} tries of {timeout:g} s")


@dataclass(frozen=True)
class Tracker:
    """A running opentracker: UDP and HTTP on the same port."""

    host: str
    port: int
    process: RunningProcess

    @property
    def udp_url(self) -> str:
        return f"udp://{self.host}:{self.port}/announce"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}/announce"


def _whitelisted(host: str, port: int, info_hash: bytes) -> Callable[[], bool]:
    """A readiness check: opentracker answers an announce for `info_hash` in full.

    opentracker listens before a thread of its own has loaded the whitelist, and until then it
    answers an announce with an 8-byte "not whitelisted" reply. It checks the whitelist only for
    peers that join, not for the event `stopped` (measured: a full reply for any info-hash), so the
    probe announces `started` (a seeder wanting no peers) and, once that gets a full reply,
    `stopped`, which takes it out of the swarm again.
    """

    def announce(sock: socket.socket, connection_id: bytes, event: int) -> bytes:
        probe = struct.pack(
            ">8sII20s20sQQQIIIiH",
            connection_id,
            1,  # announce
            2,  # transaction id
            info_hash,
            b"-probe-" + bytes(13),
            0,  # downloaded
            0,  # left: a seeder
            0,  # uploaded
            event,
            0,  # our address: the datagram's
            0,  # key
            0,  # numwant
            1,  # port
        )
        return udp_request(sock, probe, (host, port), attempts=1, timeout=0.2)

    def full(reply: bytes) -> bool:
        return len(reply) >= 20 and reply[:8] == struct.pack(">II", 1, 2)

    def check() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            try:
                reply = udp_request(
                    sock,
                    struct.pack(">QII", 0x41727101980, 0, 1),
                    (host, port),
                    attempts=1,
                    timeout=0.2,
                )
                if len(reply) < 16 or reply[:8] != struct.pack(">II", 0, 1):
                    return False
                if not full(announce(sock, reply[8:16], 2)):  # started
                    return False
                for _ in range(10):  # leave the swarm: tests count its peers
                    try:
                        if full(announce(sock, reply[8:16], 3)):  # stopped
                            return True
                    except TimeoutError:
                        pass
                raise ClientNotReadyError("opentracker kept the readiness probe in the swarm")
            except TimeoutError:
                return False

    return check


def start_opentracker(
    start_process: StartProcess,
    workdir: Path,
    info_hashes: Iterable[bytes],
    *,
    host: str = "127.0.0.1",
    ready_timeout: float = 10.0,
) -> Tracker:
    """Start opentracker on a free port of `host`, whitelisting `info_hashes` (20 bytes each; for a
    v2 info-hash pass its first 20 bytes), and wait until it serves them.

    Debian builds it in whitelist mode. It chroots to `workdir` and drops to `nobody` (when run as
    root), so `workdir` and the whitelist inside it are made readable by everyone.
    """
    executable = require_client("opentracker")
    hashes = list(info_hashes)
    if not hashes:
        raise ValueError("opentracker (whitelist mode) needs at least one info-hash")
    port = free_port(host, tcp=True, udp=True)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    whitelist = workdir / "whitelist.txt"
    whitelist.write_text("".join(h.hex() + "\n" for h in hashes))
    whitelist.chmod(0o644)
    argv = [executable, "-i", host, "-p", str(port), "-P", str(port)]
    argv += ["-d", str(workdir), "-u", "nobody", "-w", "whitelist.txt"]
    # cwd=workdir: without root the chroot fails and the whitelist path is relative to the cwd.
    process = start_process(
        argv,
        cwd=workdir,
        log_dir=workdir.parent,
        ready=_whitelisted(host, port, hashes[0]),
        ready_timeout=ready_timeout,
        name=f"opentracker-{port}",
    )
    return Tracker(host, port, process)
