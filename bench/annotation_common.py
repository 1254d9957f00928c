"""What the parts of the annotation benchmark share: their campaigns and raters, and the meters
around each measurement (wall time, and the CPU other programs took meanwhile)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.models import User
from django.db import connection

from annotation.models import Campaign
from bench import cpu, sqldata
from bench.report import ROOT, say

RATERS = 5
SIZES = {"10k": 10_000, "1m": 1_000_000}
TABLES = ("annotation_item", "annotation_assignment", "annotation_judgment", "auth_user")
LOG_DIR = ROOT / "var" / "bench"


def bench_campaign(name: str, *, status: str = Campaign.Status.OPEN) -> Campaign:
    return Campaign.objects.create(
        name=name, kind=Campaign.Kind.SSI, raters_per_item=RATERS, status=status, instructions="benchmark"
    )


def users(prefix: str, count: int) -> list[User]:
    ids = sqldata.create_users(prefix, count)
    return list(User.objects.filter(pk__in=ids).order_by("pk"))


@contextmanager
def timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    say(f"  {label}: {time.perf_counter() - started:.1f} s")


class OthersMeter:
    """How many cores other programs on the machine kept busy while the block ran: the machine's busy
    time less this process and its database backend. The figures are only as good as this is small."""

    def __init__(self) -> None:
        self.cores = 0.0

    def _ours(self) -> float:
        return cpu.self_seconds() + cpu.process_seconds(self._backend)

    def __enter__(self) -> OthersMeter:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self._backend = int(cursor.fetchone()[0])
        self._start = (time.monotonic(), cpu.machine_busy_seconds(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, machine, ours = self._start
        seconds = time.monotonic() - wall
        others = cpu.machine_busy_seconds() - machine - (self._ours() - ours)
        self.cores = max(0.0, others) / max(seconds, 1e-9)
        if self.cores > 0.2:
            say(f"  WARNING: other programs kept {self.cores:.2f} cores busy meanwhile: figures disturbed")


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
