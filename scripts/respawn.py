"""Keep one process of ``make run`` running: ``respawn.py NAME COMMAND...`` (see the Procfile).

When the command exits without being asked to (a crash, kill -9, out of memory), say so and start
it again, after a pause that doubles with each quick death. When it dies RESPAWN_LIMIT times
within RESPAWN_WINDOW_SECONDS it is broken rather than unlucky: say so and exit non-zero, and
honcho then stops the rest of the platform, so that nothing is left half-running. SIGTERM or
SIGINT (honcho stopping, Ctrl-C) stops the command and exits without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

LIMIT = int(os.environ.get("RESPAWN_LIMIT", "5"))
WINDOW_SECONDS = float(os.environ.get("RESPAWN_WINDOW_SECONDS", "120"))
FIRST_PAUSE_SECONDS = float(os.environ.get("RESPAWN_FIRST_PAUSE_SECONDS", "1"))


def say(name: str, message: str) -> None:
    print(f"== {name}: {message}", flush=True)


def how(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def main(name: str, command: list[str]) -> int:
    stopping = False
    child: subprocess.Popen | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is None or child.poll() is not None:
            raise SystemExit(0)  # between two runs: nothing to wait for
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deaths: list[float] = []
    while True:
        child = subprocess.Popen(command)  # noqa: S603 - the Procfile's own command
        returncode = child.wait()
        if stopping:
            return 0
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < WINDOW_SECONDS] + [now]
        if len(deaths) >= LIMIT:
            say(
                name,
                f"stopped unexpectedly ({how(returncode)}), {len(deaths)} times within "
                f"{WINDOW_SECONDS:.0f} s; giving up and stopping Groundwork. Its output above says why.",
            )
            return 1
        pause = FIRST_PAUSE_SECONDS * 2 ** (len(deaths) - 1)
        say(name, f"stopped unexpectedly ({how(returncode)}); starting it again in {pause:g} s")
        time.sleep(pause)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: respawn.py NAME COMMAND [ARGS...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
