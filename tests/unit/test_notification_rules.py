"""agents.notification_rules: one notification per terminal order, with its template."""

from __future__ import annotations

import pytest

from agents.notification_rules import TEMPLATES, notification_for
from orders_app.records import TERMINAL_STATUSES


@pytest.mark.parametrize(
    ("status", "template"),
    [
        ("FULFILLED", "order_confirmed"),
        ("REJECTED", "order_rejected"),
        ("PAYMENT_FAILED", "payment_failed"),
        ("CANCELLED", "order_cancelled_refunded"),
    ],
)
def test_terminal_change_gets_its_template(mk, status: str, template: str) -> None:
    change = mk.status_changed(status, terminal=True)
    assert notification_for(change, None) == {
        "channel": "email",
        "template": template,
        "status": status,
    }


def test_every_terminal_status_has_a_distinct_template() -> None:
    assert set(TEMPLATES) == set(TERMINAL_STATUSES)
    assert len(set(TEMPLATES.values())) == len(TEMPLATES)


@pytest.mark.parametrize("status", ["CREATED", "VALIDATED", "PAID"])
def test_no_notification_for_non_terminal(mk, status: str) -> None:
    assert notification_for(mk.status_changed(status, terminal=False), None) is None


def test_no_notification_when_terminal_flag_is_false(mk) -> None:
    assert notification_for(mk.status_changed("FULFILLED", terminal=False), None) is None


def test_no_notification_for_unknown_terminal_status(mk) -> None:
    assert notification_for(mk.status_changed("WEIRD", terminal=True), None) is None


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_no_second_notification_when_ledger_exists(mk, status: str) -> None:
    change = mk.status_changed(status, terminal=True)
    first = notification_for(change, None)
    assert first is not None
    assert notification_for(change, first) is None
    assert notification_for(change, {}) is None, "any ledger entry, even empty, means sent"


def test_a_redelivered_terminal_change_resends_the_recorded_notification(mk) -> None:
    from agents.notification_rules import notification_for, resend_for

    change = mk.status_changed("FULFILLED", terminal=True)
    first = notification_for(change, None)
    assert first is not None
    assert resend_for(change, first) == first
    assert resend_for(mk.status_changed("PAID", terminal=False), first) is None
    assert resend_for(change, None) is None
