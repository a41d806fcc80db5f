"""A server process on a loopback port: what the tests and the benchmarks start and measure.

One class for every server the suite and ``bench/`` run (the gateway's
launcher, plain daphne, the SDK's own apps under either), so that starting,
waiting for the port, reading the log and measuring memory and CPU are
written once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Launcher:
    """``python -m MODULE -b 127.0.0.1 -p PORT [ARGS] APP`` in the repository root, listening once constructed.

    ``settings`` names the Django settings module, ``overrides`` (JSON-encoded into ``MCP_TEST_OVERRIDES``) the
    settings that module lets a test change; with ``log`` the process's output is kept in a file
    (:meth:`log`), else discarded. ``command`` (given the port) replaces the whole command line, run in ``cwd``;
    a variable given as ``None`` in ``env`` is removed from the inherited environment.
    """

    def __init__(
        self,
        app: str,
        *,
        module: str = "mcp_gateway.daphne",
        settings: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str | None] | None = None,
        args: Sequence[str] = (),
        log: bool = True,
        name: str = "",
        command: Callable[[int], Sequence[str]] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.app = app
        self.module = module
        self.name = name or module
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        merged: dict[str, str | None] = {**os.environ, **(env or {})}
        environment = {key: value for key, value in merged.items() if value is not None}
        if settings is not None:
            environment["DJANGO_SETTINGS_MODULE"] = settings
        if overrides:
            environment["MCP_TEST_OVERRIDES"] = json.dumps(overrides)
        self.log_file = (
            tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False) if log else None
        )
        output: Any = self.log_file if self.log_file is not None else subprocess.DEVNULL
        argv = (
            list(command(self.port))
            if command is not None
            else [sys.executable, "-m", module, *args, "-b", "127.0.0.1", "-p", str(self.port), app]
        )
        self.proc = subprocess.Popen(argv, cwd=cwd, env=environment, stdout=output, stderr=subprocess.STDOUT)
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"{self.name} did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """What the process has written so far (empty when started without a log)."""
        if self.log_file is None:
            return ""
        return Path(self.log_file.name).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig`` and wait for the process (killing it after ``timeout``); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_file is not None:
            self.log_file.close()  # the process had its own copy; log() reads the file by name
        return self.proc.returncode

    def rss_bytes(self) -> int:
        """The memory the process holds now."""
        with open(f"/proc/{self.proc.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def peak_rss_bytes(self) -> int:
        """The most memory the process has held at once since it started (its RSS high-water mark)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
        return int(kib) * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
