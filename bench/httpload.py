"""A gunicorn server of Groundwork on loopback and raters that submit judgments to it as fast as it answers.

Each rater is a thread with one keep-alive ``http.client`` connection to 127.0.0.1: it asks for its
first task once, then submits answers to each assignment and takes the next one from the response,
until a fixed deadline. Nothing here touches the database; it only talks HTTP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

HOST = "127.0.0.1"
ANSWERS = {"answers": {"sensible": "yes", "specific": "yes", "interesting": "no"}}
NEXT_PATH = "/api/v1/tasks/next?kind=ssi"
REQUEST_TIMEOUT_S = 30.0
# After the deadline a rater finishes the request in flight, so it stops by itself within this.
JOIN_GRACE_S = REQUEST_TIMEOUT_S + 10


@dataclass(frozen=True)
class ServerConfig:
    """How gunicorn runs: ``sync`` (one request at a time per process) or ``gthread``."""

    worker_class: str
    workers: int
    threads: int = 1

    @property
    def label(self) -> str:
        if self.worker_class == "gthread":
            return f"gthread, {self.workers} workers x {self.threads} threads"
        return f"{self.worker_class}, {self.workers} workers"

    @property
    def slug(self) -> str:
        """``sync_5``, ``gthread_2x4``: a name for its figures."""
        if self.worker_class == "gthread":
            return f"gthread_{self.workers}x{self.threads}"
        return f"{self.worker_class}_{self.workers}"

    def args(self) -> list[str]:
        args = ["--worker-class", self.worker_class, "--workers", str(self.workers)]
        if self.worker_class == "gthread":
            args += ["--threads", str(self.threads), "--keep-alive", "10"]
        return args


@dataclass(frozen=True)
class Server:
    port: int
    pid: int  # the gunicorn master; its workers are its children


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def gunicorn(config: ServerConfig, *, log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``gunicorn groundwork.wsgi`` on a free loopback port while the block runs.

    The server runs in a session of its own; it is stopped (SIGTERM, then SIGKILL) by that id.
    """
    port = free_port()
    gunicorn_bin = Path(sys.executable).with_name("gunicorn")
    command = [
        str(gunicorn_bin),
        "groundwork.wsgi",
        "--bind",
        f"{HOST}:{port}",
        *config.args(),
        "--log-level",
        "warning",
        "--timeout",
        "60",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own gunicorn, fixed arguments
            command,
            env={**os.environ, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(port, process, log)
            yield Server(port=port, pid=process.pid)
        finally:
            _stop(process)


def _wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        connection = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer /healthz in {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Rater:
    """One client: its token, and what it saw (filled in by its own thread only)."""

    worker_id: int
    token: str
    # (monotonic time the response arrived, seconds it took, status) of every submit.
    submits: list[tuple[float, float, int]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)  # assignment ids answered 201
    errors: Counter[str] = field(default_factory=Counter)  # "POST 409", "GET 500", "connection"…
    exhausted: bool = False  # nothing left for this rater (204)


@dataclass(frozen=True)
class LoadResult:
    raters: list[Rater]
    measure_from: float
    measure_to: float

    @property
    def window_s(self) -> float:
        return self.measure_to - self.measure_from

    def accepted_in_window(self) -> list[tuple[float, float]]:
        """(arrival, latency) of the 201s that arrived in the measured window."""
        return [
            (at, took)
            for rater in self.raters
            for at, took, status in rater.submits
            if status == 201 and self.measure_from <= at < self.measure_to
        ]

    def accepted_ids_in_window(self) -> list[int]:
        """The assignment ids of the 201s that arrived in the measured window (a rater's 201s and its
        ``accepted`` ids are in the same order)."""
        ids = []
        for rater in self.raters:
            arrivals = [at for at, _, status in rater.submits if status == 201]
            ids += [
                assignment
                for at, assignment in zip(arrivals, rater.accepted, strict=True)
                if self.measure_from <= at < self.measure_to
            ]
        return ids

    def per_second(self) -> list[int]:
        seconds = [0] * max(1, round(self.window_s))
        for at, _ in self.accepted_in_window():
            index = int(at - self.measure_from)
            if index < len(seconds):
                seconds[index] += 1
        return seconds

    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for rater in self.raters:
            total.update(rater.errors)
        return total


def _exchange(
    connection: http.client.HTTPConnection, method: str, path: str, token: str, body: bytes | None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    data = json.loads(payload) if payload and response.status in (200, 201) else None
    return response.status, data


def _rate(rater: Rater, port: int, start: threading.Barrier, deadline: list[float]) -> None:
    body = json.dumps(ANSWERS).encode()
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    assignment: int | None = None
    start.wait()
    try:
        while time.monotonic() < deadline[0]:
            try:
                if assignment is None:
                    status, data = _exchange(connection, "GET", NEXT_PATH, rater.token, None)
                    if status == 204:
                        rater.exhausted = True
                        return
                    if status != 200:
                        rater.errors[f"GET {status}"] += 1
                        time.sleep(0.05)
                        continue
                    assignment = int(data["assignment_id"])
                sent = time.monotonic()
                status, data = _exchange(
                    connection, "POST", f"/api/v1/assignments/{assignment}/submit", rater.token, body
                )
                arrived = time.monotonic()
                rater.submits.append((arrived, arrived - sent, status))
                if status == 201:
                    rater.accepted.append(assignment)
                    upcoming = data.get("next")
                    assignment = int(upcoming["assignment_id"]) if upcoming else None
                else:
                    rater.errors[f"POST {status}"] += 1
                    assignment = None
            except (OSError, http.client.HTTPException):
                # A lost response: submitting the same answers again is answered 200, not stored twice.
                rater.errors["connection"] += 1
                connection.close()
                time.sleep(0.05)
            except (ValueError, KeyError, TypeError):
                rater.errors["bad body"] += 1
                assignment = None
    finally:
        connection.close()


class Monitor(Protocol):
    """Told when the measured window starts and ends, and asked to sample a few times a second."""

    def window_start(self) -> None: ...

    def sample(self) -> None: ...

    def window_end(self) -> None: ...


def run_load(
    raters: Sequence[Rater],
    *,
    port: int,
    warmup_s: float,
    duration_s: float,
    monitor: Monitor | None = None,
    sample_every_s: float = 0.25,
) -> LoadResult:
    """Every rater submits as fast as it is answered for ``warmup_s + duration_s`` seconds; only 201s
    arriving in the last ``duration_s`` count. Returns when every rater has stopped."""
    start = threading.Barrier(len(raters) + 1)
    deadline = [float("inf")]
    threads = [
        threading.Thread(target=_rate, args=(rater, port, start, deadline), daemon=True, name=f"rater-{i}")
        for i, rater in enumerate(raters)
    ]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline[0] = began + warmup_s + duration_s
    start.wait()
    measure_from, measure_to = began + warmup_s, began + warmup_s + duration_s
    if monitor is not None:
        time.sleep(max(0.0, measure_from - time.monotonic()))
        monitor.window_start()
        while (now := time.monotonic()) < measure_to:
            monitor.sample()
            time.sleep(max(0.0, min(sample_every_s, measure_to - now)))
        monitor.window_end()
    stop_by = deadline[0] + JOIN_GRACE_S
    for thread in threads:
        thread.join(timeout=max(0.0, stop_by - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("some raters did not stop within the grace period")
    return LoadResult(list(raters), measure_from=measure_from, measure_to=measure_to)
