"""The embedded default under ordinary use, against its running processes.

The platform is started as ``make run`` starts it (scripts/run.sh without the first model): an
SQLite database and the filesystem broker under a fresh ARTIFACTS_DIR, and the Procfile's web
server and Celery worker run by honcho. No PostgreSQL, no Redis.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from groundwork import broker
from tests.load.helpers import call, children, command_line, free_port, is_up, stop_group, wait_until

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
RATERS = 5
PASSWORD = "embedded-test-password"


@dataclass
class Platform:
    url: str
    root: Path
    env: dict[str, str]
    honcho: subprocess.Popen
    log: Path

    def manage(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def token(self, username: str) -> str:
        status, body = call(
            self.url, None, "POST", "/api/v1/auth/token/", {"username": username, "password": PASSWORD}
        )
        assert status == 200, body
        return body["token"]

    def worker_pid(self) -> int | None:
        """The Celery worker's main process (the child of ``respawn.py worker``)."""
        for pid in _descendants(self.honcho.pid):
            line = command_line(pid)
            if "celery" in line and "worker" in line and "respawn.py" not in line:
                parent = _parent(pid)
                if "respawn.py" in command_line(parent):
                    return pid
        return None

    def task_results(self) -> Counter[str]:
        with sqlite3.connect(self.root / "groundwork.sqlite3", timeout=30) as db:
            return Counter(
                dict(
                    db.execute(
                        "SELECT status, count(*) FROM django_celery_results_taskresult GROUP BY status"
                    )
                )
            )


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *_descendants(child)]
    return found


def embedded_env(root: Path) -> dict[str, str]:
    """The environment of ``make run`` on a fresh machine: nothing set but what run.sh sets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "CELERY_", "SECRET_KEY", "DEBUG", "ARTIFACTS_DIR", "DJANGO_"))
    }
    return {**env, "ARTIFACTS_DIR": str(root), "DEBUG": "true", "HOST": "127.0.0.1", "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = {**embedded_env(root), "PORT": str(port), "RATER_PASSWORD": PASSWORD}
    log = root / "platform.log"
    for args in (
        ["migrate", "--noinput"],
        ["load_demo_dialogs"],
        ["load_demo_campaigns"],
        *(
            ["create_user", f"rater{n}", "--role", "crowdworker", "--password-env", "RATER_PASSWORD"]
            for n in range(RATERS)
        ),
        ["create_user", "scientist", "--role", "researcher", "--password-env", "RATER_PASSWORD"],
    ):
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    with log.open("w") as output:
        honcho = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "honcho"), "start", "-f", "Procfile", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform = Platform(url=f"http://127.0.0.1:{port}", root=root, env=env, honcho=honcho, log=log)
    try:
        wait_until(lambda: is_up(platform.url), 90, "the platform to answer")
        wait_until(platform.worker_pid, 60, "the Celery worker to start")
        wait_until(lambda: "ready." in platform.output(), 60, "the Celery worker to be ready")
        yield platform
    finally:
        stop_group(honcho)


def _rate(
    platform: Platform, token: str, stop: threading.Event, statuses: Counter[int], lock: threading.Lock
) -> None:
    """A crowdworker rating the demo SSI campaign through the API until ``stop``."""
    rng = random.Random(token)
    task: Any = None
    while not stop.is_set():
        if task is None:
            status, task = call(platform.url, token, "GET", "/api/v1/tasks/next?kind=ssi")
            with lock:
                statuses[status] += 1
            if status != 200:
                task = None
                time.sleep(0.2)
                continue
        answers = {a: rng.choice(["yes", "no"]) for a in ("sensible", "specific", "interesting")}
        status, body = call(
            platform.url,
            token,
            "POST",
            f"/api/v1/assignments/{task['assignment_id']}/submit",
            {"answers": answers},
        )
        with lock:
            statuses[status] += 1
        task = body.get("next") if status == 201 and isinstance(body, dict) else None


def test_dataset_builds_finish_while_crowdworkers_rate(platform: Platform) -> None:
    """Three pretrain builds requested while five crowdworkers rate: every build becomes ready
    (on SQLite a build's progress update used to fail with "database is locked" and leave the
    build ``running`` at 0 forever) and every rating request is answered."""
    tokens = [platform.token(f"rater{n}") for n in range(RATERS)]
    researcher = platform.token("scientist")
    stop, lock = threading.Event(), threading.Lock()
    statuses: Counter[int] = Counter()
    raters = [threading.Thread(target=_rate, args=(platform, t, stop, statuses, lock)) for t in tokens]
    for rater in raters:
        rater.start()
    try:
        wait_until(lambda: statuses[201] >= 20, 60, "the raters to get going")
        ids = []
        for _ in range(3):
            status, body = call(platform.url, researcher, "POST", "/api/v1/datasets/", {"kind": "pretrain"})
            assert status == 202, body
            ids.append(body["id"])

        def finished() -> list[dict[str, Any]] | None:
            datasets = [call(platform.url, researcher, "GET", f"/api/v1/datasets/{i}/")[1] for i in ids]
            return datasets if all(d["status"] in ("ready", "failed") for d in datasets) else None

        datasets = wait_until(finished, 240, "three dataset builds to finish", every=1)
    finally:
        stop.set()
        for rater in raters:
            rater.join(timeout=60)
    assert [(d["status"], d["error"]) for d in datasets] == [("ready", "")] * 3
    assert all(d["done"] == d["total"] >= 899 for d in datasets)  # every one of the 899 demo dialogs
    assert set(statuses) <= {200, 201, 204}, statuses
    assert statuses[201] > 50


def test_a_burst_of_tasks_from_several_threads_all_run(platform: Platform) -> None:
    """Thousands of tasks queued from several threads while the worker consumes: every one runs
    and the worker lives (kombu's own filesystem transport let a worker read a message before it
    was written, and the worker died on it)."""
    folder = platform.root / "celery"
    broker.register()
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "store_processed": False,
        "control_folder": str(folder / "control"),
    }
    app = Celery("burst")  # only to send: the platform's worker knows the task by name
    worker = platform.worker_pid()
    before = platform.task_results()["SUCCESS"]
    threads, per_thread = 4, 500

    def send() -> None:
        # The embedded broker named explicitly: a Celery app's broker URL yields to CELERY_BROKER_URL.
        with Connection("filesystem://", transport_options=options) as connection:
            for _ in range(per_thread):
                # A real task with nothing to do: bring the search index in step for no URLs.
                app.send_task(
                    "toolset.tasks.search_index_sync_task", args=[[]], queue="default", connection=connection
                )

    senders = [threading.Thread(target=send) for _ in range(threads)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    wait_until(
        lambda: platform.task_results()["SUCCESS"] - before >= threads * per_thread,
        240,
        f"{threads * per_thread} tasks to run",
        every=1,
    )
    assert platform.task_results()["FAILURE"] == 0
    assert platform.worker_pid() == worker, "the worker was restarted"
    assert "Unrecoverable error" not in platform.output()


def test_a_worker_that_dies_is_started_again(platform: Platform) -> None:
    worker = platform.worker_pid()
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    wait_until(
        lambda: "worker: stopped unexpectedly (killed by SIGKILL); starting it again" in platform.output(),
        30,
        "the platform to say the worker died",
    )
    wait_until(lambda: (platform.worker_pid() or worker) != worker, 60, "a new worker")
    # The new worker works: a dataset build requested now is built.
    researcher = platform.token("scientist")
    status, body = call(platform.url, researcher, "POST", "/api/v1/datasets/", {"kind": "pretrain"})
    assert status == 202, body
    ready = wait_until(
        lambda: (
            call(platform.url, researcher, "GET", f"/api/v1/datasets/{body['id']}/")[1]["status"] == "ready"
        ),
        120,
        "the build on the new worker",
        every=1,
    )
    assert ready
    assert call(platform.url, None, "GET", "/healthz")[0] == 200


def test_manage_py_works_with_the_embedded_defaults(platform: Platform) -> None:
    """The README's commands, run from the same folder with nothing set (no DEBUG, no
    SECRET_KEY), act on make run's database."""
    env = {key: value for key, value in platform.env.items() if key not in ("DEBUG", "PORT", "HOST")}
    done = platform.manage(
        "create_user", "newadmin", "--role", "admin", "--password-env", "RATER_PASSWORD", env=env
    )
    assert done.returncode == 0, done.stderr
    assert "newadmin: role admin" in done.stdout
    assert platform.token("newadmin")


def test_a_process_that_keeps_dying_stops_the_whole_platform(tmp_path: Path) -> None:
    """honcho with a web process and one that fails at once: the failing one is started again a
    few times, then everything stops with a message that says why."""
    port = free_port()
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"web: exec {PYTHON} -m http.server {port} --bind 127.0.0.1\n"
        f"worker: exec {PYTHON} {ROOT / 'scripts' / 'respawn.py'} worker {PYTHON} -c 'raise SystemExit(3)'\n"
    )
    env = {**os.environ, "RESPAWN_LIMIT": "3", "RESPAWN_FIRST_PAUSE_SECONDS": "0.1"}
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "honcho"), "start", "-f", str(procfile)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count("worker: stopped unexpectedly (exit code 3); starting it again") == 2
    assert (
        "stopped unexpectedly (exit code 3), 3 times within 120 s; giving up and stopping Groundwork"
        in output
    )
    assert "sending SIGTERM to web" in output  # honcho stopped the web server: nothing half-running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
