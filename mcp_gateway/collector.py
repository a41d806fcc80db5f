"""How often the garbage collector runs in a worker holding many sessions: young collections far apart.

CPython collects its youngest generation every 700 net allocations, and the
next one every ten of those. A request allocates thousands of objects, so a
session that has just opened, or a new client's session that lives for a few
requests, outlives two young collections and lands in the oldest generation,
even when it dies a moment later. Only a full collection, which scans every
tracked object of every held session, frees what it leaves behind in cycles;
and CPython runs one once that oldest generation has grown by a quarter. With
10,000 idle sessions held (about 3.5 million tracked objects), that was a
pause of 1 to 2 s every few thousand new clients.

With the youngest generation collected every :data:`THRESHOLDS`\\ ``[0]``
allocations, a short-lived client's objects are freed (by reference counting,
or by a young collection, which only scans what is young) before they are
promoted, so the oldest generation grows only by what lives on: full
collections come when held sessions really grow by a quarter. A young
collection then scans at most about a hundred thousand objects, tens of
milliseconds at worst; cyclic garbage waits that much longer, a few MB at most.
"""

from __future__ import annotations

import gc

# Collect generation 0 every 10,000 net allocations (CPython: 700), generation 1 every 10 of those (CPython's), and
# the oldest after 10 of those (CPython's, and only once it has grown by a quarter since the last full collection).
# 50,000 and 20 made a generation-1 collection during a burst of opens scan up to a million objects (200 ms).
THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Set this process's collection thresholds to :data:`THRESHOLDS` (the launcher calls it when it starts)."""
    gc.set_threshold(*THRESHOLDS)
