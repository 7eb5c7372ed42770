"""Patches of faust-streaming / mode internals, in one place, each behind a setting and
pinned by tests: ``skip_guard`` (the defects that skip records silently after an
assignment, and one that hangs a rebalance; ``ORDERS_SKIP_GUARD``) and ``gaps`` (an offset
gap detector: a delivered offset that jumps over records never delivered is counted and
logged).  They answer Faust's defects, not the broker's, so they apply on any broker."""
