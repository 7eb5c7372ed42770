"""Patches of faust-streaming / mode internals, in one place, each pinned by tests:
``skip_guard`` (the defects that skip records silently after an assignment, and one that
hangs a rebalance; ``ORDERS_SKIP_GUARD``) and ``gaps`` (an offset gap detector: a
delivered offset that jumps over records never delivered is counted and logged) answer
Faust's defects; ``eager_delivery`` (``ORDERS_EAGER_DELIVERY``) removes a per-message cost
of Faust's consumer, ``lean_monitor`` (``ORDERS_LEAN_MONITOR``) one of its Prometheus
sensor and ``changelog_cache`` (``ORDERS_CHANGELOG_CACHE``) most of its changelog writes;
``quick_exit`` (no setting: it only shortens a fixed wait once everything has stopped)
the last second of a worker's stop.  None is about the broker, so they apply on any
broker."""
