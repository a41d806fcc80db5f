"""The benchmark's settings (``bench.settings``) with an allocation probe for :mod:`bench.idle_profile`.

With ``BENCH_TRACEMALLOC`` set (a path prefix), :mod:`tracemalloc` runs in the server from the start, and each
``SIGUSR1`` writes a snapshot to ``<prefix>.<n>.snap`` plus a count of the objects the collector tracks, by type,
to ``<prefix>.<n>.types`` (JSON): what :mod:`bench.idle_profile` diffs between N and 2N held sessions.
"""

import os

from bench.settings import *  # noqa: F403

if os.environ.get("BENCH_TRACEMALLOC"):
    from bench.idle_profile import install_probe

    install_probe(os.environ["BENCH_TRACEMALLOC"])
