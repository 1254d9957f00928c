"""The embedded broker (groundwork.broker): a message appears in the queue folder whole."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem

from groundwork import broker

MESSAGES = 40


def _connection(folder: Path, transport: type) -> Connection:
    queue = folder / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    return Connection(
        transport=transport,
        transport_options={
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "store_processed": False,
            "control_folder": str(folder / "control"),
        },
    )


def _race(folder: Path, transport: type, monkeypatch: pytest.MonkeyPatch, module: Any) -> list[str]:
    """Put messages whose write is slow (the window of kombu issue #1551 held open) while a
    consumer polls the queue; returns what went wrong for the consumer."""
    slow = module.str_to_bytes

    def slow_to_bytes(value: Any) -> bytes:
        time.sleep(0.01)  # after the file is opened, before its content is written
        return slow(value)

    monkeypatch.setattr(module, "str_to_bytes", slow_to_bytes)
    problems: list[str] = []
    received: list[Any] = []
    done = threading.Event()

    def consume() -> None:
        with _connection(folder, transport) as connection:
            channel = connection.default_channel
            while not done.is_set() or len(received) < MESSAGES:
                try:
                    received.append(channel._get("default"))
                except filesystem.Empty:
                    if done.is_set() and not any(folder.joinpath("queue").iterdir()):
                        return
                except (ValueError, OSError) as exc:  # JSONDecodeError is a ValueError
                    problems.append(f"{type(exc).__name__}: {exc}")

    consumer = threading.Thread(target=consume)
    consumer.start()
    with _connection(folder, transport) as connection:
        channel = connection.default_channel
        for n in range(MESSAGES):
            channel._put("default", {"n": n})
    done.set()
    consumer.join(timeout=30)
    if not problems:
        assert sorted(message["n"] for message in received) == list(range(MESSAGES))
    return problems


def test_a_consumer_never_reads_a_message_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _race(tmp_path / "ours", broker.Transport, monkeypatch, broker) == []


def test_the_race_is_real_with_kombus_own_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forcing above reproduces kombu issue #1551 with kombu's own transport. When this
    fails, kombu writes messages whole itself and ``groundwork.broker`` can go."""
    problems = _race(tmp_path / "kombu", filesystem.Transport, monkeypatch, filesystem)
    assert problems, "kombu's filesystem transport no longer shows the empty-message race"
    assert "JSONDecodeError" in problems[0]


def test_filesystem_urls_use_the_whole_message_transport() -> None:
    broker.register()
    with Connection("filesystem://") as connection:
        assert isinstance(connection.transport, broker.Transport)


def test_a_message_staged_but_not_renamed_is_not_consumed(tmp_path: Path) -> None:
    """Staged files live outside the queue folder, so a consumer does not see them."""
    with _connection(tmp_path, broker.Transport) as connection:
        channel = connection.default_channel
        channel._put("default", {"n": 1})
        staging = tmp_path / broker.STAGING_FOLDER
        assert staging.is_dir()
        assert list(staging.iterdir()) == []
        (staging / "1_x.default.msg").write_bytes(b"")  # a write cut short
        assert channel._get("default") == {"n": 1}
        with pytest.raises(filesystem.Empty):
            channel._get("default")
