"""CPU time of processes and of the whole machine, from /proc (Linux), to tell what a load cost apart
from what other programs on the same machine took meanwhile."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid …": comm may hold spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads); 0 when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the comm: state(0) ppid(1) … utime(11) stime(12).
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_seconds(pids: Iterable[int]) -> dict[int, float]:
    return {pid: process_seconds(pid) for pid in pids}


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (user, nice, system, irq, softirq, steal)."""
    first = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first[:8]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / _TICK


def self_seconds() -> float:
    times = os.times()
    return times.user + times.system
