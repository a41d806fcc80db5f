"""The documentation under docs/: it builds clean, it lists every setting, check and refusal, and its snippets run.

**Runnable snippets.** A code block in ``docs/**/*.md`` is run by this module when it is a MyST
``{code-block}`` whose ``:name:`` starts with ``run-``; the rest of the name's prefix says how:

- ``run-py-…``: a Python script, run with this interpreter (the ``mcp`` 2.x of the project);
- ``run-py1-…``: a Python script for the ``mcp`` 1.x client, run in the interop virtualenv (``.venv-mcp1``);
- ``run-js-…``: an ES module, run with the pinned Node 22 next to the pinned ``@modelcontextprotocol/sdk``;
- ``run-sh-…``: a shell snippet, run with bash; ``npx -y PACKAGE`` resolves to the pinned Node tools (no network).

Each runs as printed, as a subprocess against a live launcher serving the demo's MCP server at ``/mcp/``, as the
user ``demo`` that the docs name, with ``MCP_URL`` (Streamable HTTP), ``MCP_SSE_URL`` (HTTP+SSE), ``MCP_TOKEN``
(a personal access token) and ``MCP_HEADERS`` (the login cookie and CSRF headers, as ``demo_headers --json`` prints
them) in its environment. It must exit 0 and print what ``EXPECTED`` says; a runnable snippet without an entry
there fails, so none is added unchecked. The Node and 1.x tools are installed on first use; where they cannot be,
their snippets skip locally and fail in CI.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from mcp_gateway import checks, exceptions
from mcp_gateway.conf import DEFAULTS
from mcp_sessions.models import AccessToken

from .conftest import IN_CI, login_headers
from .interop import harness

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# What each runnable snippet prints (a regular expression searched in its standard output).
EXPECTED = {
    "run-py-streamable-token": r"^demo$",
    "run-py-sse-token": r"^demo$",
    "run-py-sse-cookie": r"^demo$",
    "run-py1-streamable-token": r"^demo$",
    "run-js-streamable-token": r"^demo$",
    "run-sh-inspector-token": r'"username":\s*"demo"',
}

SNIPPET = re.compile(
    r"^```\{code-block\}[ \t]+(?P<lang>\S+)[ \t]*\n(?P<options>(?::[\w-]+:[^\n]*\n)*)\n?(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
NAME = re.compile(r"^:name:[ \t]*(?P<name>\S+)[ \t]*$", re.MULTILINE)

# npx as the snippets call it, mapped to the pinned tools: the printed command runs, offline.
NPX_SHIM = """#!/bin/sh
[ "$1" = "-y" ] && shift
package="$1"; shift
case "$package" in
  @modelcontextprotocol/inspector@2) exec "$DOCS_NODE" "$DOCS_INSPECTOR" "$@" ;;
  mcp-remote) exec "$DOCS_NODE" "$DOCS_MCP_REMOTE" "$@" ;;
esac
echo "npx shim: no pinned tool for $package" >&2
exit 127
"""


@dataclass(frozen=True)
class Snippet:
    name: str
    language: str
    code: str
    source: str


def runnable_snippets() -> list[Snippet]:
    """Every ``{code-block}`` named ``run-…`` in the documentation's sources."""
    found = []
    for path in sorted(DOCS.rglob("*.md")):
        if "_build" in path.parts:
            continue
        for match in SNIPPET.finditer(path.read_text()):
            name = NAME.search(match["options"])
            if name and name["name"].startswith("run-"):
                source = f"{path.relative_to(ROOT)}:{path.read_text().count(chr(10), 0, match.start()) + 1}"
                found.append(Snippet(name["name"], match["lang"], match["body"], source))
    return found


def _unavailable(exc: Exception) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI needs the interop tools: {exc}")
    pytest.skip(f"interop tools unavailable: {exc}")


def _python_command(snippet: Snippet, workdir: Path, env: dict[str, str]) -> list[str]:
    script = workdir / "snippet.py"
    script.write_text(snippet.code)
    return [sys.executable, str(script)]


def _python1_command(snippet: Snippet, workdir: Path, env: dict[str, str]) -> list[str]:
    try:
        python = harness.ensure_py1_venv()
    except harness.InteropUnavailable as exc:
        _unavailable(exc)
    script = workdir / "snippet.py"
    script.write_text(snippet.code)
    return [str(python), str(script)]


def _node_tools() -> harness.NodeTools:
    try:
        return harness.ensure_node_tools()
    except harness.InteropUnavailable as exc:
        _unavailable(exc)


def _javascript_command(snippet: Snippet, workdir: Path, env: dict[str, str]) -> list[str]:
    tools = _node_tools()
    (workdir / "node_modules").symlink_to(tools.dir / "node_modules")  # how `npm install` would resolve the SDK
    script = workdir / "snippet.mjs"
    script.write_text(snippet.code)
    return [str(tools.node), str(script)]


def _shell_command(snippet: Snippet, workdir: Path, env: dict[str, str]) -> list[str]:
    tools = _node_tools()
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    npx = bin_dir / "npx"
    npx.write_text(NPX_SHIM)
    npx.chmod(npx.stat().st_mode | stat.S_IXUSR)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        DOCS_NODE=str(tools.node),
        DOCS_INSPECTOR=str(tools.inspector),
        DOCS_MCP_REMOTE=str(tools.mcp_remote),
    )
    script = workdir / "snippet.sh"
    script.write_text("set -eu\n" + snippet.code)
    return ["bash", str(script)]


RUNNERS: dict[str, Callable[[Snippet, Path, dict[str, str]], list[str]]] = {
    "run-py-": _python_command,
    "run-py1-": _python1_command,
    "run-js-": _javascript_command,
    "run-sh-": _shell_command,
}


def test_every_runnable_snippet_has_an_expected_output_and_a_runner() -> None:
    names = [snippet.name for snippet in runnable_snippets()]
    assert len(names) == len(set(names)), f"duplicate snippet names: {names}"
    assert set(names) == set(EXPECTED), {"unexpected": set(names) - set(EXPECTED), "gone": set(EXPECTED) - set(names)}
    for name in names:
        assert any(name.startswith(prefix) for prefix in RUNNERS), f"{name}: no runner for its prefix"


@pytest.fixture
def demo_credentials(make_user: Callable[..., Any]) -> dict[str, str]:
    """The user the docs name, with a token and login headers, as the snippets read them from the environment."""
    user = make_user("demo")
    _, secret = AccessToken.objects.issue(user, "docs")
    return {"MCP_TOKEN": secret, "MCP_HEADERS": json.dumps(login_headers(user))}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("snippet", [pytest.param(s, id=s.name) for s in runnable_snippets()])
def test_the_snippet_runs_as_printed(
    snippet: Snippet, daphne: Any, demo_credentials: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("npm_", "NODE_", "MCP_"))},
        **demo_credentials,
        "MCP_URL": f"{daphne.url}/mcp/",
        "MCP_SSE_URL": f"{daphne.url}/mcp/sse",
        "HOME": str(home),
        "NO_COLOR": "1",
        "BROWSER": "false",
    }
    [runner] = [run for prefix, run in RUNNERS.items() if snippet.name.startswith(prefix)]
    command = runner(snippet, tmp_path, env)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    where = f"{snippet.name} ({snippet.source}) exited {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, where
    assert re.search(EXPECTED[snippet.name], result.stdout, re.MULTILINE), where


def test_the_docs_build_without_a_warning(tmp_path: Path) -> None:
    """Warnings as errors, nitpicky: a broken internal link, label, document or reference fails the build."""
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0 and not warnings, result.stderr


def _doc(path: str) -> str:
    return (DOCS / path).read_text()


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_setting_is_in_the_settings_reference(name: str) -> None:
    assert re.search(rf"^\| `MCP_GATEWAY_{name}` \|", _doc("reference/settings.md"), re.MULTILINE)


@pytest.mark.parametrize(
    "check_id",
    sorted(
        {
            check_id
            for module in sorted(Path(checks.__file__).parent.glob("checks*.py"))  # checks.py and its parts
            for check_id in re.findall(r'id="mcp_gateway\.(\w+)"', module.read_text())
        }
    ),
)
def test_every_system_check_is_in_the_checks_reference(check_id: str) -> None:
    assert re.search(rf"^\| `(mcp_gateway\.)?{check_id}`", _doc("reference/checks.md"), re.MULTILINE)


def _refusal_reasons() -> list[str]:
    classes, todo = [], [exceptions.GatewayError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        classes.append(cls)
    # The abstract bases' defaults, never answered as such: each refusal raises a subclass.
    abstract = {"bad_request", "forbidden"}
    return sorted({cls.reason for cls in classes} - abstract)


@pytest.mark.parametrize("reason", _refusal_reasons())
def test_every_refusal_reason_is_in_the_refusals_table(reason: str) -> None:
    assert f"`{reason}`" in _doc("reference/refusals.md")


def test_the_tutorial_includes_the_readme_integration_section() -> None:
    """One source: the README's section between its markers, included by the tutorial, not copied."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count("<!-- integration-start -->") == 1 and readme.count("<!-- integration-end -->") == 1
    assert readme.index("<!-- integration-start -->") < readme.index("<!-- integration-end -->")
    tutorial = _doc("tutorial.md")
    assert ":start-after: <!-- integration-start -->" in tutorial
    assert ":end-before: <!-- integration-end -->" in tutorial


@pytest.mark.parametrize(
    "target", sorted(set(re.findall(r"\]\(((?:docs/|LICENSE)[^)#]*)", (ROOT / "README.md").read_text())))
)
def test_the_readmes_links_into_the_docs_exist(target: str) -> None:
    assert (ROOT / target).exists(), target
