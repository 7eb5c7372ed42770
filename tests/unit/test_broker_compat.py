"""When the embedded broker's work-arounds apply (orders_app/broker_compat/__init__.py)."""

from __future__ import annotations

from orders_app.broker_compat import wanted


def test_on_and_off_are_what_they_say() -> None:
    for cluster in (None, "tansu_cluster", "MkU3OEVBNTcwNTJENDM2Qk"):
        assert wanted("on", cluster) is True
        assert wanted("off", cluster) is False


def test_auto_applies_on_tansu_and_when_unprobed_not_on_kafka() -> None:
    assert wanted("auto", "tansu_cluster") is True
    assert wanted("auto", "Tansu-lab") is True
    assert wanted("auto", None) is True  # the safe side: the plain `faust` CLI, --skip-checks
    assert wanted("auto", "MkU3OEVBNTcwNTJENDM2Qk") is False  # a Kafka (KRaft) cluster id
