"""Work-arounds for the embedded broker's (Tansu 0.6.0) measured defects, in one place.

Each module names the defect it answers (DESIGN.md, "The embedded stack's contract") and
is tested: ``offsets`` (ListOffsets reports a partition's end as the last batch's first
offset + 1), ``group`` (generation-0 groups get no LeaveGroup), ``fetch`` (a waiting
Fetch is held for the whole wait), ``holes`` (a Fetch answer can skip a batch whose
offsets were taken but which is not stored yet).  :func:`wanted` decides whether they
apply: always with ``ORDERS_BROKER_COMPAT=on``, never with ``off``, and with ``auto``
(the default) when the broker is the embedded one - it says so in its cluster id - as
probed before the worker starts (``orders_app/preflight.py``).
"""

from __future__ import annotations

TANSU_CLUSTER_PREFIX = "tansu"


def wanted(mode: str, cluster_id: str | None) -> bool:
    """Whether the work-arounds apply: ``mode`` is ``on``/``off``/``auto``; ``cluster_id``
    is the broker's (None when it was not probed: then they apply, the safe side)."""
    if mode in ("on", "off"):
        return mode == "on"
    return cluster_id is None or cluster_id.lower().startswith(TANSU_CLUSTER_PREFIX)
