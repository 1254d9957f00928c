"""The embedded broker: kombu's filesystem transport, with every message appearing whole.

kombu's ``filesystem`` transport creates a message file in the queue folder and then writes it.
A worker polling in between moves the empty file away and dies on it
(``Unrecoverable error: JSONDecodeError``; kombu issue #1551). Here a message is written to a
file in a sibling folder first and then renamed into the queue folder: a rename within one file
system is atomic, so a consumer sees no file or the whole message, never part of one.

Registered as the transport of ``filesystem://`` URLs by ``groundwork.settings`` (which every
process of the platform imports before it talks to the broker), so the broker URL stays the one
kombu documents. Only ``_put`` differs from kombu's; reading, acks and fanout are kombu's own.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu import transport
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# Where messages are written before they are renamed into the queue folder: under the queue
# folder's parent, so that the rename never crosses file systems.
STAGING_FOLDER = ".staging"


class Channel(filesystem.Channel):
    """kombu's filesystem channel whose messages appear in the queue folder whole."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name kombu gives a message (its order is the time of sending), so that kombu's
        # ``_get`` reads ours exactly as its own.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = Path(self.data_folder_out)
        staging = folder.parent / STAGING_FOLDER
        staged = staging / name
        try:
            staging.mkdir(exist_ok=True)
            with staged.open("xb") as stream:
                stream.write(str_to_bytes(dumps(payload)))
            os.replace(staged, folder / name)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise ChannelError(f"Cannot add message {name!r} to {folder}") from exc


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make ``filesystem://`` broker URLs use this transport (idempotent)."""
    transport.TRANSPORT_ALIASES["filesystem"] = f"{__name__}:Transport"
    transport._transport_cache.pop("filesystem", None)
