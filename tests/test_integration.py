"""An integrator's site from the wheel: the README's "Adding it to your site", applied to a fresh project.

The wheel is installed into a clean virtualenv from the package index, as a
user installs it; ``django-admin startproject mysite`` then gets every block
the README's integration section marks (``<!-- integration: PATH MODE -->``
before a code block, MODE ``create``, ``replace`` or ``append``), read from
README.md at test time, and the commands of its ``<!-- integration: shell -->``
blocks are the ones run here (:func:`readme_command`), so the README cannot
drift from what is tested. Then: both system checks, ``runserver``, and the
launcher with the production settings, where the official client calls a
tool over both transports with a token from ``create_mcp_token`` and a
superuser opens every page of the model app's admin over real HTTP.

Slow (a virtualenv, a pip install: about a minute with pip's cache), so marked
``slow``, but part of the normal suite. Without the package index or Redis it
skips, and fails in CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx2
import pytest
from django.utils.crypto import get_random_string
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from .clients import BOUND, TRANSPORTS, mcp_client
from .conftest import IN_CI, ROOT, require_redis
from .support.launcher import Launcher

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

README = ROOT / "README.md"
SECTION_START, SECTION_END = "<!-- integration-start -->", "<!-- integration-end -->"
BLOCK = re.compile(
    r"<!-- integration: (?P<target>[^>]+?) -->\n(?P<indent> *)```[\w-]*\n(?P<body>.*?)\n(?P=indent)```", re.S
)
PACKAGE = "django-mcp-gateway"
USERNAME = "admin"
# What check --deploy leaves to the site once the README's production settings apply, as the README says.
ACCEPTED_DEPLOY_WARNINGS = {"security.W004", "security.W008"}
# A Redis database of its own, so that nothing this site keeps meets another test's keys.
REDIS_URL = "redis://127.0.0.1:6379/5"


@dataclass(frozen=True)
class Block:
    """One marked code block of the README's integration section."""

    target: str  # "shell", or a file of the project
    mode: str  # "create", "replace" or "append"; "" for shell
    text: str


def integration_section() -> str:
    text = README.read_text()
    assert text.count(SECTION_START) == 1 and text.count(SECTION_END) == 1, "the README's integration markers"
    return text[text.index(SECTION_START) : text.index(SECTION_END)]


def readme_blocks() -> list[Block]:
    """The section's marked blocks in order; every marker must stand right before its code block."""
    section = integration_section()
    blocks = []
    for match in BLOCK.finditer(section):
        target, _, mode = match["target"].partition(" ")
        indent = len(match["indent"])
        text = "\n".join(line[indent:] for line in match["body"].splitlines()) + "\n"
        assert (target == "shell") == (mode == ""), f"marker {match['target']!r}"
        assert mode in {"", "create", "replace", "append"}, f"marker {match['target']!r}"
        blocks.append(Block(target, mode, text))
    markers = re.findall(r"<!-- integration: [^>]+ -->\n", section)
    assert len(blocks) == len(markers), "a marker not right before its code block"
    return blocks


def readme_command(*words: str) -> tuple[dict[str, str], list[str]]:
    """The README's shell line whose command starts with ``words``: its variable assignments and its argv."""
    for block in readme_blocks():
        if block.target != "shell":
            continue
        for line in block.text.splitlines():
            argv = shlex.split(line, comments=True)
            env = {}
            while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
                name, _, value = argv.pop(0).partition("=")
                env[name] = value
            if argv[: len(words)] == list(words):
                return env, argv
    raise AssertionError(f"the README's integration section has no command {' '.join(words)!r}")


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs this: {reason}")
    pytest.skip(reason)


@dataclass
class Site:
    """The integrator's project, its virtualenv, and what was made with its commands."""

    venv: Path
    project: Path
    password: str
    token: str
    secret_key: str

    def env(self, *, production: bool = False, extra: Mapping[str, str] = {}) -> dict[str, str | None]:
        """The project's environment: its virtualenv first, nothing of this checkout or its test settings."""
        env: dict[str, str | None] = {
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "VIRTUAL_ENV": str(self.venv),
            "DJANGO_SETTINGS_MODULE": None,
            "PYTHONPATH": None,
            "MCP_TEST_DB_NAME": None,
            "MCP_TEST_OVERRIDES": None,
            "REDIS_URL": REDIS_URL,
            **extra,
        }
        if production:
            env |= {"DJANGO_SECRET_KEY": self.secret_key, "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
        return env

    def argv(self, argv: list[str]) -> list[str]:
        """A README command line run with this virtualenv's interpreter."""
        python = str(self.venv / "bin" / "python")
        return {"python": [python], "pip": [python, "-m", "pip"]}.get(argv[0], [argv[0]]) + argv[1:]

    def run(
        self, *words: str, args: tuple[str, ...] = (), production: bool = False, extra: Mapping[str, str] = {}
    ) -> subprocess.CompletedProcess[str]:
        """Run the README's command starting with ``words`` (plus ``args``) in the project; fail on an error."""
        assigned, argv = readme_command(*words)
        return run(
            self.argv([*argv, *args]), self.project, {**self.env(production=production, extra=extra), **assigned}
        )


def run(
    argv: list[str], cwd: Path, env: Mapping[str, str | None], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in {**os.environ, **env}.items() if value is not None}
    done = subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def install(venv: Path, wheel: Path) -> None:
    """The README's pip command, with the wheel in place of the package's name (its extras kept)."""
    assigned, argv = readme_command("pip", "install")
    requirements = [str(wheel) + arg[len(PACKAGE) :] if arg.startswith(PACKAGE) else arg for arg in argv[2:]]
    assert str(wheel) in " ".join(requirements), f"the README installs no {PACKAGE}: {argv}"
    python = str(venv / "bin" / "python")
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements]
    environment = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "PIP_USER"}}
    try:
        subprocess.run(
            command, env={**environment, **assigned}, check=True, capture_output=True, text=True, timeout=300
        )
    except subprocess.CalledProcessError as exc:
        skip_or_fail(f"pip could not install {PACKAGE} and its dependencies: {exc.stderr[-2000:]}")
    except subprocess.TimeoutExpired:
        skip_or_fail("pip took over 300 s to install the wheel's dependencies")


def apply(project: Path, block: Block) -> None:
    path = project / block.target
    if block.mode == "create":
        assert not path.exists(), f"{block.target} exists already"
        path.write_text(block.text)
    elif block.mode == "replace":
        assert path.exists(), f"{block.target} is not in the project"
        path.write_text(block.text)
    else:
        assert path.exists(), f"{block.target} is not in the project"
        path.write_text(path.read_text() + "\n\n" + block.text)


@pytest.fixture(scope="module")
def site(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A clean virtualenv with the wheel, ``startproject mysite`` with the README's blocks, migrated, a superuser."""
    require_redis()
    base = tmp_path_factory.mktemp("integration")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    install(venv, built_wheel)
    site = Site(venv, base / "mysite", get_random_string(20), "", get_random_string(50))
    run([str(venv / "bin" / "django-admin"), "startproject", "mysite"], base, site.env())
    for block in readme_blocks():
        if block.target != "shell":
            apply(site.project, block)
    # The test's own knob, not the README's: client usage rows saved within a second, for the admin pages to show.
    settings = site.project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\nMCP_GATEWAY_USAGE_FLUSH_INTERVAL = 0.5\n")
    site.run("python", "manage.py", "migrate")
    site.run(
        "python", "manage.py", "createsuperuser",
        args=("--noinput", "--username", USERNAME, "--email", "admin@example.com"),
        extra={"DJANGO_SUPERUSER_PASSWORD": site.password},
    )  # fmt: skip
    token = site.run("python", "manage.py", "create_mcp_token").stdout.strip()
    assert re.fullmatch(r"mcp_\S+", token), token
    site.token = token
    return site


@pytest.fixture(scope="module")
def collected(site: Site) -> Site:
    """The site once the README's ``collectstatic`` has filled ``STATIC_ROOT``."""
    site.run("python", "manage.py", "collectstatic", production=True)
    return site


@pytest.fixture(scope="module")
def launcher(collected: Site) -> Iterator[Launcher]:
    """The README's deployment: the launcher, with the production settings, after ``collectstatic``."""
    site = collected
    assigned, argv = readme_command("python", "-m", "mcp_gateway.daphne")

    def command(port: int) -> list[str]:
        line = site.argv(argv)
        line[line.index("-b") + 1], line[line.index("-p") + 1] = "127.0.0.1", str(port)
        return line

    server = Launcher("", command=command, cwd=site.project, env={**site.env(production=True), **assigned})
    yield server
    server.stop()


async def whoami(base_url: str, token: str, transport: str) -> str:
    """What the site's ``whoami`` tool answers the official client."""
    async with mcp_client(base_url, {"Authorization": f"Bearer {token}"}, transport=transport) as client:
        result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


async def modern_whoami(base_url: str, token: str) -> None:
    """``whoami`` through the mcp 2.3 client in auto mode: protocol 2026-07-28, served per request."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=BOUND) as http,
        Client(streamable_http_client(f"{base_url}/mcp/", http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == USERNAME  # type: ignore[union-attr]


def test_the_site_imports_the_packages_from_its_virtualenv(site: Site) -> None:
    done = run(
        [
            str(site.venv / "bin" / "python"),
            "-c",
            "import mcp_gateway, mcp_sessions; print(mcp_gateway.__file__, mcp_sessions.__file__)",
        ],
        site.project,
        site.env(),
    )
    paths = [Path(name) for name in done.stdout.split()]
    assert all(path.is_relative_to(site.venv) for path in paths), paths


def test_check_finds_no_issue(site: Site) -> None:
    done = run([str(site.venv / "bin" / "python"), "manage.py", "check"], site.project, site.env())
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr


def test_check_deploy_leaves_only_the_warnings_the_readme_names(collected: Site) -> None:
    done = collected.run("python", "manage.py", "check", "--deploy", production=True)
    assert "Warning: " not in done.stderr, done.stderr  # a Python warning, such as "No directory at: STATIC_ROOT"
    found = set(re.findall(r"\(([\w.]+\.[A-Z]\d{3})\)", done.stderr + done.stdout))
    assert found == ACCEPTED_DEPLOY_WARNINGS, done.stderr
    section = integration_section()
    assert all(f"`{name}`" in section for name in ACCEPTED_DEPLOY_WARNINGS)


def test_runserver_serves_the_gateway_and_the_static_files(site: Site) -> None:
    """Development: daphne's runserver (``DEBUG`` on) serves the MCP routes and the admin's CSS."""
    assigned, argv = readme_command("python", "manage.py", "runserver")
    server = Launcher(
        "",
        command=lambda port: [*site.argv(argv), f"127.0.0.1:{port}", "--noreload"],
        cwd=site.project,
        env={**site.env(), **assigned},
        name="runserver",
    )
    try:
        assert asyncio.run(whoami(server.url, site.token, "streamable_http")) == USERNAME
        css = httpx2.get(f"{server.url}/static/admin/css/base.css", timeout=BOUND)
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    finally:
        server.stop()
    assert not re.search("Traceback|Warning: ", server.log()), server.log()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_launcher_answers_whoami_with_the_tokens_user(launcher: Launcher, site: Site, transport: str) -> None:
    assert await whoami(launcher.url, site.token, transport) == USERNAME


def test_the_launcher_serves_the_collected_static_files(launcher: Launcher, site: Site) -> None:
    css = httpx2.get(f"{launcher.url}/static/admin/css/base.css", timeout=BOUND)
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert css.content == (site.project / "staticfiles" / "admin" / "css" / "base.css").read_bytes()


class AdminBrowser:
    """A browser behind the TLS-terminating proxy the production settings expect: ``X-Forwarded-Proto: https``.

    Keeps the cookies itself: they are ``Secure``, which a cookie jar would not send over the loopback's plain HTTP.
    """

    def __init__(self, http: httpx2.Client) -> None:
        self.http = http
        self.http.headers.update({"X-Forwarded-Proto": "https", "Origin": f"https://{http.base_url.netloc.decode()}"})
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        cookie = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = self.http.request(method, path, headers={"Cookie": cookie}, **kwargs)
        for header in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response

    def page(self, path: str) -> str:
        response = self.request("GET", path)
        assert response.status_code == 200, f"GET {path}: {response.status_code}\n{response.text[:2000]}"
        return response.text

    def post(self, path: str, data: dict[str, str], form: str) -> httpx2.Response:
        """POST ``data`` with the CSRF token of the form page ``form``."""
        [token] = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.page(form))[:1]
        return self.request("POST", path, data={"csrfmiddlewaretoken": token, **data})

    def first_link(self, path: str, pattern: str) -> str:
        """The first link matching ``pattern`` on the page, waiting (bounded) for one to appear."""
        deadline = time.monotonic() + BOUND
        while not (links := re.findall(pattern, self.page(path))) and time.monotonic() < deadline:
            time.sleep(0.2)  # audit rows are written in batches, a moment after the event
        assert links, f"no link {pattern!r} on {path} within {BOUND}s"
        return str(links[0])


def test_every_admin_page_of_the_model_app_answers_through_the_launcher(launcher: Launcher, site: Site) -> None:
    asyncio.run(whoami(launcher.url, site.token, "sse"))  # a session and its audit rows to look at
    asyncio.run(modern_whoami(launcher.url, site.token))  # and a 2026-07-28 client's usage row
    with httpx2.Client(base_url=launcher.url, timeout=BOUND) as http:
        check_admin_pages(AdminBrowser(http), site.password)
    assert not re.search("Traceback|Warning: ", launcher.log()), launcher.log()


def check_admin_pages(browser: AdminBrowser, password: str) -> None:
    """Log in with the login form, then open every changelist, change page, the add-token and revoke pages."""
    login = browser.post(
        "/admin/login/?next=/admin/", {"username": USERNAME, "password": password, "next": "/admin/"},
        form="/admin/login/?next=/admin/",
    )  # fmt: skip
    assert login.status_code == 302 and login.headers["location"] == "/admin/", login.text[:2000]
    assert "mcp_sessions" in browser.page("/admin/")

    changelists = sorted(set(re.findall(r'href="(/admin/mcp_sessions/\w+/)"', browser.page("/admin/mcp_sessions/"))))
    assert {
        "/admin/mcp_sessions/mcpsession/",
        "/admin/mcp_sessions/accesstoken/",
        "/admin/mcp_sessions/auditevent/",
    } <= set(changelists)
    for changelist in changelists:
        browser.page(browser.first_link(changelist, rf'href="({re.escape(changelist)}\d+/change/)'))

    user_id = browser.first_link(f"/admin/auth/user/?q={USERNAME}", r'href="/admin/auth/user/(\d+)/change/')
    add = "/admin/mcp_sessions/accesstoken/add/"
    created = browser.post(
        add, {"user": user_id, "name": "from the admin", "expires_at_0": "", "expires_at_1": ""}, form=add
    )
    shown = re.search(r"mcp_[\w-]{40,}", created.text)
    assert created.status_code == 200 and shown, created.text[:2000]
    assert asyncio.run(whoami(str(browser.http.base_url).rstrip("/"), shown[0], "streamable_http")) == USERNAME

    sessions = "/admin/mcp_sessions/mcpsession/"
    session_id = browser.first_link(sessions, rf'href="{sessions}(\d+)/change/')
    confirm = browser.post(
        sessions, {"action": "revoke_sessions", "_selected_action": session_id, "index": "0"}, form=sessions
    )
    assert confirm.status_code == 200 and "Revoke" in confirm.text, confirm.text[:2000]
