"""The benchmark's settings (``bench.settings``) with the demo's logging and the probe of :mod:`bench.scale`.

The demo's logging, as a deployment has some: ``bench.settings`` configures none, so the MCP SDK's
``logging.basicConfig`` (run when an ``MCPServer`` is made) puts a ``rich`` handler at INFO on the root logger,
and every audit line of every open was rendered by it (15% of an open's CPU time).
"""

import os

from bench.settings import *  # noqa: F403
from demo.settings import LOGGING  # noqa: F401

if os.environ.get("BENCH_GC_LOG"):
    from bench.scale import install_gc_probe

    install_gc_probe(os.environ["BENCH_GC_LOG"])

if os.environ.get("BENCH_GC_TUNE"):  # what the launcher does with mcp_gateway.collector (see bench.scale --tune-gc)
    from mcp_gateway.collector import tune_collector

    tune_collector()
