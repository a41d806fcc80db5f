"""Running a few lines of Django code in a process of their own: another process of the site, as the admin's is."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from .launcher import ROOT

# Seconds the process may take, Django's setup included, on a loaded machine.
PROCESS_TIMEOUT = 60.0


async def run_django(code: str, overrides: Mapping[str, Any] | None = None) -> str:
    """Run ``code`` after ``django.setup()`` with the test settings (and ``overrides``); its output, or fail."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MCP_TEST_OVERRIDES": json.dumps(dict(overrides or {})),
    }
    script = f"import django\ndjango.setup()\n{code}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"the process failed ({process.returncode}):\n{text}"
    return text
