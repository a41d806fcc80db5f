"""The wheel an integrator installs holds everything the apps need at run time, not only their modules.

An editable install (``pip install -e .``, as the demo uses) serves files from
the checkout, so a file missing from the wheel shows only on a real site: the
admin's token-created page answered 500 (``TemplateDoesNotExist``) after the
token was saved. So the wheel is built here, from a copy of the tracked files,
and its contents compared with what the packages hold.
"""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mcp_gateway", "mcp_sessions", "mcp_oauth")


@pytest.fixture(scope="module")
def wheel(built_wheel: Path) -> Iterator[zipfile.ZipFile]:
    """The project's wheel (built once a session, see ``conftest.built_wheel``), opened."""
    with zipfile.ZipFile(built_wheel) as archive:
        yield archive


def package_files() -> list[str]:
    """Every file of the packages that git tracks, as a path inside the wheel."""
    tracked = subprocess.run(
        ["git", "ls-files", *PACKAGES], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return sorted(tracked)


def test_the_wheel_holds_every_file_of_the_packages(wheel: zipfile.ZipFile) -> None:
    in_wheel = set(wheel.namelist())
    missing = [name for name in package_files() if name not in in_wheel]
    assert not missing, f"not in the wheel: {missing}"


@pytest.mark.parametrize(
    "name",
    [
        "mcp_sessions/templates/admin/mcp_sessions/accesstoken/created.html",
        "mcp_sessions/templates/admin/mcp_sessions/mcpsession/revoke_confirmation.html",
        "mcp_gateway/templates/mcp_gateway/endpoint.html",
        "mcp_sessions/static/mcp_sessions/admin.css",
        "mcp_sessions/templates/mcp_sessions/account/index.html",
        "mcp_sessions/templates/mcp_sessions/account/token_created.html",
        "mcp_sessions/static/mcp_sessions/account.css",
        "mcp_gateway/py.typed",
        "mcp_sessions/py.typed",
        "mcp_oauth/templates/mcp_oauth/consent.html",
        "mcp_oauth/py.typed",
    ],
    ids=[
        "token-created-page",
        "revoke-confirmation-page",
        "endpoint-page",
        "admin-css",
        "account-page",
        "account-token-created-page",
        "account-css",
        "gateway-typed",
        "sessions-typed",
        "oauth-consent-page",
        "oauth-typed",
    ],
)
def test_the_wheel_holds_the_pages_and_what_type_checkers_read(wheel: zipfile.ZipFile, name: str) -> None:
    assert name in wheel.namelist()


def test_the_wheel_carries_the_license_and_says_which_versions_it_supports(wheel: zipfile.ZipFile) -> None:
    [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert any(name.endswith("/LICENSE") for name in wheel.namelist())
    assert "License-Expression: BSD-3-Clause" in text
    for classifier in ("Framework :: Django :: 5.2", "Framework :: Django :: 6.1", "Typing :: Typed"):
        assert f"Classifier: {classifier}" in text


def test_the_wheel_holds_no_tests_demo_or_bench(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert {"tests", "demo", "bench"}.isdisjoint(tops), tops


def test_the_wheel_names_the_projects_urls(wheel: zipfile.ZipFile) -> None:
    [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Project-URL: ")
    )
    repository = "https://github.com/django-mcp-gateway/django-mcp-gateway"
    assert urls == {
        "Homepage": repository,
        "Documentation": "https://django-mcp-gateway.readthedocs.io/",
        "Source": repository,
        "Changelog": f"{repository}/blob/main/CHANGELOG.md",
        "Issues": f"{repository}/issues",
    }
