"""Per-country analytics tables (the ksqlDB replacement).

- ``country_stats``: country -> totals and :data:`WINDOW_S` windows (see
  :mod:`agents.analytics_rules`); written from ``orders_app-status-by-country`` (key
  country); the value's layout and derived figures: orders_app/country_totals.py.
- ``analytics_ledger``: order_id -> what was already counted for it; written from the
  same stream (an order always maps to one country, so to one partition).
"""

from __future__ import annotations

from tables import json_table

country_stats = json_table("country_stats", help="country -> totals and windows")
analytics_ledger = json_table("analytics_ledger", help="order_id -> counted / terminal status")
