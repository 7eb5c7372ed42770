"""The ``orders-app`` command line.

- ``run``: embedded broker + Postgres (migrated, demo catalogue) + CDC + N workers + load
  generator; prints the URLs; a worker that exits is restarted with backoff and a crash
  loop stops the stack with exit 1 (:mod:`orders_app.embedded.supervisor`); Ctrl-C / SIGTERM stops
  every process it started.
- ``worker``: a plain Faust worker against the configured broker (same as
  ``faust -A orders_app.app worker``), after a pre-flight check of broker and Postgres.
- ``generate``: orders into Postgres, or ``--direct`` straight to ``order_created``.
- ``stack``: broker + Postgres only, printing ``export ORDERS_...=`` lines.
- ``migrate``: create the schema (idempotent) and seed the demo catalogue when empty.

Bad settings print one line naming the variable and exit 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import click

from orders_app.embedded.supervisor import ChildSpec, Supervisor
from orders_app.settings import Settings, load_settings_or_exit


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"orders-app: {message}", err=True)
    raise SystemExit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Order-processing pipeline on faust-streaming."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--skip-checks", is_flag=True, help="do not check broker/Postgres first")
@click.pass_context
def worker(ctx: click.Context, skip_checks: bool) -> None:
    """Start a Faust worker (extra options go to `faust worker`)."""
    settings = load_settings_or_exit()
    if not skip_checks:
        from orders_app.preflight import preflight

        problems = asyncio.run(preflight(settings))
        if problems:
            _fail(problems[0])
        if settings.broker_compat == "auto":
            from orders_app.broker_compat import wanted
            from orders_app.preflight import broker_cluster_id

            cluster = asyncio.run(broker_cluster_id(settings))
            on = wanted("auto", cluster)
            settings = settings.model_copy(update={"broker_compat": "on" if on else "off"})
    from orders_app.app import app

    app.use_settings(settings)
    if settings.event_loop == "uvloop":
        import uvloop

        # Faust's worker takes the loop from the policy when it starts.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    args = list(ctx.args)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in args):
        args = ["--loglevel", "info", *args]
    sys.argv = ["orders-app", "worker", *args]
    app.main()


@main.command()
@click.option(
    "--rate", type=float, default=None, help="orders per second (default ORDERS_GENERATOR_RATE)"
)
@click.option("--count", type=int, default=None, help="how many (default: until Ctrl-C)")
@click.option(
    "--direct", is_flag=True, help="produce OrderCreated to order_created, bypassing Postgres"
)
@click.option("--seed", type=int, default=None, help="random seed for a repeatable mix")
def generate(rate: float | None, count: int | None, direct: bool, seed: int | None) -> None:
    """Generate orders."""
    settings = load_settings_or_exit()
    from orders_app.embedded import generator

    per_s = settings.generator_rate if rate is None else rate
    try:
        if direct:
            from orders_app.admin import ensure_topics, registry_topic_names

            asyncio.run(
                ensure_topics(settings.kafka_bootstrap, registry_topic_names(), settings.partitions)
            )
            sent = asyncio.run(
                generator.generate_direct(settings.kafka_bootstrap, per_s, count, seed)
            )
        else:
            sent = asyncio.run(
                generator.generate_postgres(settings.postgres_dsn, per_s, count, seed)
            )
    except KeyboardInterrupt:
        return
    except (OSError, ConnectionError) as err:
        setting = "ORDERS_BROKER_URL" if direct else "ORDERS_POSTGRES_DSN"
        _fail(f"cannot reach {'the broker' if direct else 'Postgres'} ({setting}): {err}")
    click.echo(f"generated {sent} orders")


@main.command()
def migrate() -> None:
    """Create the schema and seed the demo catalogue (idempotent)."""
    settings = load_settings_or_exit()

    async def _go() -> int:
        import asyncpg

        from orders_app.db import migrate as do_migrate
        from orders_app.db import seed_catalogue

        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            await do_migrate(conn)
            return await seed_catalogue(conn)
        finally:
            await conn.close()

    click.echo(f"migrated; seeded {asyncio.run(_go())} products")


@main.command()
@click.option("--data", type=click.Path(path_type=Path), default=Path(".data"), help="state folder")
def stack(data: Path) -> None:
    """Start the embedded broker + Postgres only and print export lines."""
    load_settings_or_exit()
    asyncio.run(_run_stack(data, workers=0, generate=False, cdc=True, rate=0, web_port=None))


@main.command()
@click.option("--workers", type=click.IntRange(0, 16), default=1, help="worker processes")
@click.option("--no-generate", is_flag=True, help="do not start the load generator")
@click.option("--rate", type=float, default=None, help="generator orders/s")
@click.option("--web-port", type=int, default=None, help="first worker's web port")
@click.option("--data", type=click.Path(path_type=Path), default=Path(".data"), help="state folder")
def run(
    workers: int, no_generate: bool, rate: float | None, web_port: int | None, data: Path
) -> None:
    """Embedded stack + CDC + workers + load generator."""
    settings = load_settings_or_exit()
    asyncio.run(
        _run_stack(
            data,
            workers=workers,
            generate=not no_generate,
            cdc=settings.cdc_enabled,
            rate=settings.generator_rate if rate is None else rate,
            web_port=web_port or settings.web_port,
        )
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _stack_env(
    base: Mapping[str, str], *, broker_url: str, dsn: str, broker_pid: int | None
) -> dict[str, str]:
    """The environment of the stack's workers: ``base`` plus where the broker and Postgres
    are, and the pid of the embedded broker when this command started one (its memory is
    then in every worker's ``/metrics``: Tansu keeps every message in memory)."""
    env = {**base, "ORDERS_BROKER_URL": broker_url, "ORDERS_POSTGRES_DSN": dsn}
    if broker_pid is not None:
        env["ORDERS_EMBEDDED_BROKER_PID"] = str(broker_pid)
    return env


def _worker_specs(
    count: int, env: dict[str, str], run_dir: Path, first_port: int
) -> list[ChildSpec]:
    """Worker ``i`` keeps web port ``first_port + i`` and its data dir across restarts."""
    return [
        ChildSpec(
            name=f"worker-{i}",
            argv=[sys.executable, "-m", "orders_app.cli", "worker", "--skip-checks"],
            env={
                **env,
                "ORDERS_WEB_PORT": str(first_port + i),
                "ORDERS_DATA_DIR": str(run_dir / f"worker-{i}"),
            },
            log_path=run_dir / f"worker-{i}.log",
        )
        for i in range(count)
    ]


async def _run_stack(
    data: Path, *, workers: int, generate: bool, cdc: bool, rate: float, web_port: int | None
) -> None:
    from orders_app.admin import ensure_topics, registry_topic_names
    from orders_app.cdc.debezium import DebeziumError
    from orders_app.embedded.servers import EmbeddedBroker, EmbeddedPostgres, StackError

    data = data.absolute()
    data.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    # The embedded broker keeps topics in memory only: worker state from an earlier run
    # would point at offsets that no longer exist, so every run starts it clean.
    run_dir = data / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    started: list[Any] = []
    broker_pid: int | None = None
    try:
        if "ORDERS_BROKER_URL" in os.environ:
            broker_url = os.environ["ORDERS_BROKER_URL"]
        else:
            broker = EmbeddedBroker(log_path=run_dir / "broker.log")
            await broker.start()
            started.append(broker)
            broker_url = broker.url
            # Tansu itself (no wrapper process): the process that holds the messages.
            broker_pid = broker.process.pid if broker.process is not None else None
        if "ORDERS_POSTGRES_DSN" in os.environ:
            dsn = os.environ["ORDERS_POSTGRES_DSN"]
        else:
            pg = EmbeddedPostgres(data / "postgres")
            await pg.start()
            started.append(pg)
            dsn = pg.dsn
        env = _stack_env(os.environ, broker_url=broker_url, dsn=dsn, broker_pid=broker_pid)
        os.environ.update(ORDERS_BROKER_URL=broker_url, ORDERS_POSTGRES_DSN=dsn)
        settings = Settings()
        await _migrate(dsn)
        await ensure_topics(settings.kafka_bootstrap, registry_topic_names(), settings.partitions)
        if cdc:
            reader = await _start_cdc(settings, dsn, run_dir, fresh_broker=bool(started))
            started.append(reader)
    except (StackError, DebeziumError) as err:
        for svc in reversed(started):
            await svc.stop()
        _fail(str(err))
        return

    click.echo(f"broker:   {broker_url}")
    click.echo(f"postgres: {dsn}")
    if workers == 0:
        click.echo(f"export ORDERS_BROKER_URL={broker_url}")
        click.echo(f"export ORDERS_POSTGRES_DSN={dsn}")
        if broker_pid is not None:
            click.echo(f"export ORDERS_EMBEDDED_BROKER_PID={broker_pid}")
    first_port = web_port or 6066
    supervisor = Supervisor(
        _worker_specs(workers, env, run_dir, first_port),
        report=lambda line: click.echo(line, err=True),
    )
    gen_task: asyncio.Task[int] | None = None
    failure: str | None = None
    try:
        await supervisor.start()
        t0 = time.monotonic()
        urls = [f"http://127.0.0.1:{first_port + i}/" for i in range(workers)]
        pending = set(urls)
        # A worker that exits while starting is the supervisor's to restart; only its
        # giving up (a crash loop) ends the wait early.
        while pending and not stop.is_set() and supervisor.failure is None:
            if time.monotonic() - t0 > 60:
                break
            for url in list(pending):
                if await asyncio.to_thread(_http_ok, url + "health"):
                    pending.discard(url)
            await asyncio.sleep(0.2)
        if supervisor.failure is None and not stop.is_set():
            for url in urls:
                click.echo(f"web:      {url}")
            if generate and workers:
                from orders_app.embedded.generator import generate_direct, generate_postgres

                gen = (
                    generate_postgres(dsn, rate, None)
                    if cdc
                    else generate_direct(settings.kafka_bootstrap, rate, None)
                )
                gen_task = asyncio.create_task(gen)
                click.echo(
                    f"generator: {rate:g} orders/s into {'Postgres' if cdc else 'order_created'}"
                )
            click.echo("Ctrl-C to stop.")
        failure = await _first_failure(supervisor, started, stop)
    finally:
        if failure is not None:
            click.echo(f"orders-app: {failure}", err=True)
        click.echo("stopping ...")
        if gen_task is not None:
            gen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gen_task
        # Workers first (SIGTERM, SIGKILL after a grace period), then the services they use.
        await _stop_reporting("workers", supervisor.stop)
        for svc in reversed(started):
            await _stop_reporting(type(svc).__name__, svc.stop)
        click.echo("stopped.")
    if failure is not None:
        raise SystemExit(1)


async def _stop_reporting(what: str, stop: Callable[[], Awaitable[None]]) -> None:
    """Stop one part of the stack; a failure is one line and the next part still stops."""
    try:
        await stop()
    except Exception as err:  # noqa: BLE001 - every part must get its turn to stop
        click.echo(f"orders-app: stopping {what} failed: {err!r}", err=True)


async def _start_cdc(settings: Settings, dsn: str, run_dir: Path, *, fresh_broker: bool) -> Any:
    """Real Debezium (``ORDERS_CDC=debezium``, the default with a Java runtime) or the
    built-in reader, started; a missing Java is one line, not an error, unless asked for."""
    from orders_app.cdc.debezium import DebeziumConnect, choose_cdc, java_runtime, missing_part
    from orders_app.db import drop_idle_slot

    kind, note = choose_cdc(settings.cdc, missing_part(java_runtime()))
    if note:
        click.echo(note, err=True)
    if kind == "debezium":
        dbz = DebeziumConnect(
            dsn=dsn,
            bootstrap=settings.kafka_bootstrap,
            work_dir=run_dir / "debezium",
            log_path=run_dir / "debezium.log",
            report=lambda line: click.echo(line, err=True),
        )
        # A slot nobody reads holds back WAL forever: the other reader's, from a run with
        # the other ORDERS_CDC, goes.
        await drop_idle_slot(dsn, settings.cdc_slot)
        await dbz.start()
        click.echo(f"cdc:      Debezium (started in {dbz.started_in:.1f}s, slot {dbz.slot})")
        return dbz
    from orders_app.cdc.builtin import CdcReader

    reader = CdcReader(
        dsn=dsn,
        bootstrap=settings.kafka_bootstrap,
        slot=settings.cdc_slot,
        poll_interval=settings.cdc_poll_interval,
        fresh_broker=fresh_broker,
    )
    await drop_idle_slot(dsn, DebeziumConnect.default_slot())
    await reader.start()
    click.echo(f"cdc:      built-in reader (slot {settings.cdc_slot})")
    return reader


async def _first_failure(
    supervisor: Supervisor, services: list[Any], stop: asyncio.Event
) -> str | None:
    """Until Ctrl-C (None) or a supervised child gives up: a worker, or Debezium."""
    from orders_app.cdc.debezium import DebeziumConnect

    waits = [asyncio.ensure_future(supervisor.wait(until=stop))]
    waits += [
        asyncio.ensure_future(svc.wait_failed())
        for svc in services
        if isinstance(svc, DebeziumConnect)
    ]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    results = [t.result() for t in done if not t.cancelled()]
    return next((r for r in results if r is not None), None)


async def _migrate(dsn: str) -> None:
    import asyncpg

    from orders_app.db import migrate as do_migrate
    from orders_app.db import seed_catalogue

    conn = await asyncpg.connect(dsn)
    try:
        await do_migrate(conn)
        await seed_catalogue(conn)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
