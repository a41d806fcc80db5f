"""What a worker's background loops check before retrying after a failure.

A loop that logs a failure and tries again (the inbox's receive, the sweep,
the heartbeat) must still end when its task is cancelled. Some libraries turn
the ``CancelledError`` thrown into them into another exception (a Redis
connection torn down mid-command, for one), which the loop's ``except
Exception`` would then take for a failure to retry, swallowing the one
cancellation asyncio delivers: the server's shutdown (or an event loop's
close) would wait for it forever.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task has been asked to stop (whatever the failure became)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
