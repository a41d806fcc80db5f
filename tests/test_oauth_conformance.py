"""The official conformance suite's authorization-server checks, against the site as issuer.

``conformance authorization`` (in the 0.2 prerelease only: 0.1.16 has no such command) reads the metadata
(``authorization-server-metadata-endpoint``), then runs a real authorization code grant
(``authorization-code-grant``): it prints the authorization URL and waits for its callback on loopback, as a
person would open it. Here a logged-in user's HTTP client opens it and presses "Allow".
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest

from .conftest import IN_CI, login_headers
from .interop.harness import InteropUnavailable, _node_env, _scratch_home, ensure_node_tools
from .support.launcher import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def approve(url: str, headers: dict[str, str]) -> str:
    """Open the authorization URL as the logged-in user, press "Allow", follow to the callback; its URL."""
    token = headers["X-CSRFToken"]
    with httpx2.Client(timeout=30, headers={"Cookie": headers["Cookie"]}) as http:
        page = http.get(url)
        assert page.status_code == 200, page.text[:500]
        done = http.post(url, data={"csrfmiddlewaretoken": token, "decision": "allow"})
        assert done.status_code == 302, done.text[:500]
        callback = done.headers["location"]
        http.get(callback)
        return callback


def test_authorization_server_conformance(daphne: Any, alice: Any) -> None:
    try:
        tools = ensure_node_tools()
    except InteropUnavailable as exc:
        if IN_CI:
            raise
        pytest.skip(str(exc))
    port = free_port()
    registered = httpx2.post(
        f"{daphne.url}/oauth/register",
        json={
            "client_name": "conformance",
            "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
            "token_endpoint_auth_method": "none",
        },
        timeout=30,
    ).json()
    headers = login_headers(alice)
    with _scratch_home() as home:
        out = home / "results"
        cmd = [str(tools.node), str(tools.conformance_next), "authorization", "--url", daphne.url]
        cmd += ["--client-id", registered["client_id"], "--resource", f"{daphne.url}/mcp", "-p", str(port)]
        cmd += ["-o", str(out), "--verbose"]
        proc = subprocess.Popen(
            cmd, cwd=home, env=_node_env(tools, home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        approved = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if not approved.is_set() and re.match(r"https?://\S+/oauth/authorize\?", line.strip()):
                    approved.set()
                    approve(line.strip(), headers)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            reader.join(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        output = "".join(lines)
        checks = _checks(out)
    assert approved.is_set(), output
    by_id = {check["id"]: check for check in checks}
    for expected in ("authorization-server-metadata", "authorization-code-grant"):
        assert by_id.get(expected, {}).get("status") == "SUCCESS", (expected, by_id.get(expected), output[-3000:])
    assert by_id["authorization-server-metadata-cimd"]["status"] == "SUCCESS"
    failures = [c for c in checks if c.get("status") == "FAILURE"]
    assert not failures, failures


def _checks(out: Path) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for path in sorted(out.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, list):
            checks += [c for c in data if isinstance(c, dict) and "id" in c]
    return checks
