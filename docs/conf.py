"""Sphinx configuration of the django-mcp-gateway documentation.

Built by ``make test`` (and ``tests/test_docs.py``) with warnings as errors and nitpicky references
(``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``): a broken internal link, a missing label or
an unresolved reference fails the build. Nothing here reaches the network: there is no intersphinx, so references
to objects outside this project (the standard library, Django) are declared external below rather than resolved.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_gateway import __version__  # noqa: E402

project = "django-mcp-gateway"
author = "The django-mcp-gateway authors"
copyright = "the django-mcp-gateway authors"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: ```{directive}``` fences and :::{note} blocks, (label)= targets, and {ref}/{doc} roles.
myst_enable_extensions = ["colon_fence", "deflist"]
# Warn (hence fail, under -W) on every link MyST cannot resolve, including [text](#anchor) to a missing target.
myst_all_links_external = False

html_theme = "furo"
html_title = f"django-mcp-gateway {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"

# Objects outside this project: without intersphinx (no network) nitpicky mode cannot resolve them.
nitpick_ignore_regex = [
    (r"py:.*", r"(typing|collections\.abc|dataclasses|django)(\..*)?"),
    (r"py:.*", r"(Any|str|int|bool|dict|Mapping)"),
]
