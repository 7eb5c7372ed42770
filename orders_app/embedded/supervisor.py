"""Supervision of the child processes of ``orders-app run`` (the workers).

Rule: a child that exits while the supervisor is running, whatever its exit code or
signal, is restarted with the same command, environment, web port and data directory,
after an exponential backoff (:data:`BACKOFF_INITIAL` doubling to :data:`BACKOFF_MAX`,
back to the start once a run lasted :data:`STABLE_AFTER`), with one report line per
restart.  A child restarted :data:`CRASH_LOOP_RESTARTS` times within
:data:`CRASH_LOOP_WINDOW` seconds that exits again is crash-looping: the supervisor gives
up and :attr:`Supervisor.failure` holds the one-line reason (the systemd
``StartLimitBurst`` / ``StartLimitIntervalSec`` rule).  :meth:`Supervisor.stop` sends
SIGTERM, SIGKILL after a grace period, and leaves no process of a child's process group
behind.

The decisions (backoff, crash loop) are pure: :class:`RestartPolicy` and
:class:`RestartHistory` know nothing of processes, so they are tested without any.
Retry libraries (tenacity, backoff) wrap a callable to retry; here the "call" is a
process that may run for hours, and the rules that matter (reset after a stable run, a
restart budget per window) are a few lines, so they are written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CRASH_LOOP_RESTARTS",
    "CRASH_LOOP_WINDOW",
    "STABLE_AFTER",
    "STOP_GRACE",
    "ChildSpec",
    "Decision",
    "RestartHistory",
    "RestartPolicy",
    "Supervisor",
    "describe_exit",
]

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
# A worker needs a few seconds to join the group and recover its tables; one that stayed
# up well past that was healthy, so its next crash starts the backoff afresh.
STABLE_AFTER = 30.0
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW = 60.0
STOP_GRACE = 8.0
# How often the supervisor looks for exited children: a restart is seconds of recovery
# anyway, so a fraction of a second of detection latency costs nothing.
POLL_INTERVAL = 0.2


# ---------------------------------------------------------------------------------------
# Pure decision logic


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff and crash-loop limits (seconds, counts)."""

    backoff_initial: float = BACKOFF_INITIAL
    backoff_max: float = BACKOFF_MAX
    stable_after: float = STABLE_AFTER
    max_restarts: int = CRASH_LOOP_RESTARTS
    window: float = CRASH_LOOP_WINDOW

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if self.stable_after <= 0 or self.window <= 0 or self.max_restarts < 1:
            raise ValueError("stable_after and window must be > 0, max_restarts >= 1")

    def backoff(self, failures: int) -> float:
        """The pause before restarting after ``failures`` (>= 1) short runs in a row."""
        # the exponent is capped so a long-lived flapping child cannot overflow a float
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(max(failures, 1) - 1, 64))

    def decide(self, history: RestartHistory, *, uptime: float, now: float) -> Decision:
        """What to do about a child that exited at ``now`` after running ``uptime`` s.

        ``now`` is any monotonic clock; the returned history is the child's next one.
        """
        failures = 1 if uptime >= self.stable_after else history.failures + 1
        recent = tuple(t for t in history.restarts if now - t < self.window)
        if len(recent) >= self.max_restarts:
            return Decision(
                restart=False,
                delay=0.0,
                history=RestartHistory(failures, recent),
                reason=(
                    f"crash loop: {len(recent)} restarts within {self.window:g}s "
                    f"(limit {self.max_restarts})"
                ),
            )
        return Decision(
            restart=True,
            delay=self.backoff(failures),
            history=RestartHistory(failures, (*recent, now)),
            reason="",
        )


@dataclass(frozen=True)
class RestartHistory:
    """One child's past: short runs in a row, and when it was restarted (recent ones)."""

    failures: int = 0
    restarts: tuple[float, ...] = ()


@dataclass(frozen=True)
class Decision:
    """Restart after ``delay`` seconds, or give up for ``reason``."""

    restart: bool
    delay: float
    history: RestartHistory
    reason: str

    @property
    def restarts_in_window(self) -> int:
        return len(self.history.restarts)


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL`` (Popen's negative codes are signals)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


# ---------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one child: the same every time, so state and port carry over."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    history: RestartHistory = field(default_factory=RestartHistory)


def _spawn(spec: ChildSpec) -> subprocess.Popen[bytes]:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_path.open("ab") as log:
        return subprocess.Popen(
            list(spec.argv),
            env=None if spec.env is None else dict(spec.env),
            cwd=spec.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session and process group: a terminal's Ctrl-C is ours to turn into
            # an orderly stop, and the group lets stop() reach whatever the child started.
            start_new_session=True,
        )


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` exited, WITHOUT reaping it.

    While the exited leader is unreaped its pid (= its process group id) cannot be reused,
    so signalling the group afterwards cannot hit an unrelated process.
    """
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reap, and skip the group
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # Only while the leader is unreaped (see _has_exited): afterwards the id may be reused.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _reap(proc: subprocess.Popen[bytes]) -> int:
    """Kill what is left of the exited child's process group, then collect its status."""
    _signal_group(proc, signal.SIGKILL)
    return proc.wait()


class Supervisor:
    """Starts the children of ``specs``, restarts them as :class:`RestartPolicy` says.

    ``report`` receives one line per restart.  After a crash loop :attr:`failure` holds
    the reason and the supervisor stops restarting; :meth:`stop` ends every child.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        report: Callable[[str], None] = print,
        grace: float = STOP_GRACE,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.policy = policy or RestartPolicy()
        self.report = report
        self.grace = grace
        self.poll_interval = poll_interval
        self.clock = time.monotonic
        self.failure: str | None = None
        self._children = [_Child(spec) for spec in specs]
        self._watcher: asyncio.Task[None] | None = None
        self._gave_up = asyncio.Event()
        self._stopped = False

    @property
    def pids(self) -> dict[str, int]:
        """The running children's pids by name (a child waiting for its restart is absent)."""
        return {c.spec.name: c.proc.pid for c in self._children if c.proc is not None}

    async def start(self) -> None:
        """Start every child; one that cannot be started is retried like a crashed one."""
        for child in self._children:
            self._restart(child)
        self._watcher = asyncio.create_task(self._watch(), name="supervisor")

    async def wait(self, until: asyncio.Event | None = None) -> str | None:
        """Until the supervisor gives up (returns the reason) or ``until`` is set (None)."""
        waiters = [asyncio.ensure_future(self._gave_up.wait())]
        if until is not None:
            waiters.append(asyncio.ensure_future(until.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.failure

    async def stop(self) -> None:
        """SIGTERM every child's group, SIGKILL after ``grace`` s, reap all; idempotent."""
        self._stopped = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        procs = [c.proc for c in self._children if c.proc is not None]
        for c in self._children:
            c.proc, c.restart_at = None, None
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        if not await self._until_exited(procs, self.grace):
            for proc in procs:
                if not _has_exited(proc):
                    _signal_group(proc, signal.SIGKILL)
            await self._until_exited(procs, 5.0)
        for proc in procs:
            if _has_exited(proc):
                _reap(proc)
            else:  # not even SIGKILL ended it (uninterruptible sleep): say so, do not hang
                self.report(f"orders-app: process {proc.pid} did not exit after SIGKILL")

    async def _until_exited(self, procs: list[subprocess.Popen[bytes]], timeout: float) -> bool:
        deadline = self.clock() + timeout
        while not all(_has_exited(p) for p in procs):
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _start(self, child: _Child) -> None:
        child.proc = _spawn(child.spec)
        child.started_at = self.clock()
        child.restart_at = None

    async def _watch(self) -> None:
        while not self._stopped:
            for child in self._children:
                if child.proc is not None and _has_exited(child.proc):
                    if not self._on_exit(child):
                        self._gave_up.set()
                elif child.restart_at is not None and self.clock() >= child.restart_at:
                    self._restart(child)
                if self._gave_up.is_set():
                    return
            await asyncio.sleep(self.poll_interval)

    def _on_exit(self, child: _Child) -> bool:
        assert child.proc is not None
        how = describe_exit(_reap(child.proc))
        child.proc = None
        return self._after_run(child, how)

    def _restart(self, child: _Child) -> None:
        if self._gave_up.is_set():
            return
        try:
            self._start(child)
        except OSError as err:
            # Counts as a run that ended at once, so a child that can no longer be started
            # at all ends in a crash loop rather than in silence.
            child.restart_at, child.started_at = None, self.clock()
            if not self._after_run(child, f"could not be started ({err})"):
                self._gave_up.set()

    def _after_run(self, child: _Child, how: str) -> bool:
        """Decide about a child whose run just ended; False when giving up."""
        now = self.clock()
        uptime = now - child.started_at
        decision = self.policy.decide(child.history, uptime=uptime, now=now)
        child.history = decision.history
        name, log = child.spec.name, child.spec.log_path
        if not decision.restart:
            self.failure = f"{name} {how}; {decision.reason}; giving up (log: {log})"
            return False
        child.restarts += 1
        child.restart_at = now + decision.delay
        self.report(
            f"orders-app: {name} {how} after {uptime:.1f}s; restarting in {decision.delay:g}s "
            f"(restart {child.restarts}, {decision.restarts_in_window} within "
            f"{self.policy.window:g}s; log: {log})"
        )
        _note(log, f"--- orders-app supervisor: {name} {how}; restart in {decision.delay:g}s ---")
        return True


def _note(log: Path, line: str) -> None:
    """A marker in the child's own log, so a reader sees where one run ended."""
    with contextlib.suppress(OSError), log.open("ab") as f:
        f.write(f"{line}\n".encode())
