"""Faust web views: orders, analytics (+ live push), inventory, health, metrics, dashboard."""
