"""Data-parallel training (DDP) over ``hp.world_size`` processes on the worker's host.

Pure torch (no Django). The process that calls :func:`run` — the Celery training worker's process
that claimed the job — is rank 0: it reports progress (and so hears of cancellation), writes the
checkpoints and keeps the trained model, exactly as a 1-process run does. Ranks 1 … N-1 are fresh
processes started with ``torch.multiprocessing``'s *spawn* (never fork: a forked copy of a process
that already ran torch threads, CUDA or a database connection is unsafe); they load the model rank
0 hands them, read the same checkpoint, compute their share of each batch and nothing else. So
the queue, the claim, the heartbeat, cancellation and the resume after kill -9 stay those of one
process: the job's worker is rank 0's process; a killed rank 0 takes its ranks with it (each rank
watches its parent and exits when it is gone), and the redelivered task starts them again from the
last checkpoint.

Backends: NCCL on CUDA (rank r on GPU r), gloo on the CPU (the cores shared out: each rank gets
``threads // world_size``). The ranks meet through a ``FileStore`` in a temporary folder of this
host, with a timeout after which a rank that waits for a dead peer fails. ``world_size`` 1 never
comes here (``run`` calls ``training.train`` directly: no process, no process group).

The training loop's side of it (the batch shares, the loss scaling, the broadcast of rank 0's
go-on) is in ``trainer.training``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from multiprocessing import connection as mp_connection
from multiprocessing import process as mp_process
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainer import devices, training
from trainer.hyperparameters import Hyperparameters

JOIN_SECONDS = 30.0  # how long rank 0 waits for the other ranks to exit after the last step


def run(
    model: nn.Module,
    examples: Sequence[training.Pair],
    hp: Hyperparameters,
    *,
    pad_id: int,
    checkpoint_dir: Path,
    report: Callable[[training.Progress], bool],
    on_checkpoint: Callable[[int], None] = lambda step: None,
    device: torch.device,
    timeout_s: float = 120.0,
) -> training.Progress:
    """``training.train`` over ``hp.world_size`` processes, this one rank 0 (``device`` says CPU
    or CUDA; rank r trains on GPU r). Raises what rank 0's loop raises (``training.Cancelled``
    included) after the other ranks are gone; a failing other rank makes rank 0 fail too."""
    if hp.world_size == 1:
        return training.train(
            model,
            examples,
            hp,
            pad_id=pad_id,
            checkpoint_dir=checkpoint_dir,
            report=report,
            on_checkpoint=on_checkpoint,
            device=device,
        )
    world = hp.world_size
    devices.check_world_size(device, world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    threads = max(1, torch.get_num_threads() // world) if device.type == "cpu" else torch.get_num_threads()
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole module: any causal LM class, loaded as is by the ranks
    folder = Path(tempfile.mkdtemp(prefix="groundwork-ddp-"))
    context = mp.get_context("spawn")
    ranks: list[Any] = []
    ready: list[Any] = []
    finished = False
    threads_before = torch.get_num_threads()
    try:
        for rank in range(1, world):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_rank_main,
                args=(
                    rank,
                    world,
                    backend,
                    str(folder / "store"),
                    timeout_s,
                    os.getpid(),
                    threads,
                    buffer.getvalue(),
                    examples,
                    hp,
                    pad_id,
                    checkpoint_dir,
                    device.type,
                    sender,
                ),
                name=f"groundwork-ddp-rank-{rank}",
                daemon=True,
            )
            _start(process)
            sender.close()
            ranks.append(process)
            ready.append(receiver)
        del buffer
        _wait_ready(ranks, ready, timeout_s)
        torch.set_num_threads(threads)
        rank0 = devices.rank_device(device.type, 0)
        _join_group(0, world, backend, str(folder / "store"), timeout_s, rank0)
        try:
            progress = training.train(
                model,
                examples,
                hp,
                pad_id=pad_id,
                checkpoint_dir=checkpoint_dir,
                report=report,
                on_checkpoint=on_checkpoint,
                device=rank0,
            )
            finished = True
            return progress
        except training.Cancelled:
            finished = True  # every rank heard it and stops
            raise
        finally:
            dist.destroy_process_group()
    finally:
        torch.set_num_threads(threads_before)
        _stop(ranks, wait=JOIN_SECONDS if finished else 0.0)
        shutil.rmtree(folder, ignore_errors=True)


def _join_group(
    rank: int, world: int, backend: str, store_path: str, timeout_s: float, device: torch.device
) -> None:
    store = dist.FileStore(store_path, world)
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)


def _start(process: Any) -> None:
    """Start a rank's process, also from a Celery prefork worker process, whose multiprocessing
    state billiard has made its own: it is marked daemonic (so multiprocessing refuses it children:
    the rule keeps a daemon's children from outliving it, which here each rank sees to itself,
    ``_watch_parent``, and rank 0 joins or ends them) and its authentication key is billiard's
    type, which multiprocessing cannot hand to the child. Both are set back after the start."""
    config = mp_process.current_process()._config
    saved = dict(config)
    config.pop("daemon", None)
    config["authkey"] = mp_process.AuthenticationString(bytes(config["authkey"]))
    process._config = {**process._config, "authkey": config["authkey"]}
    try:
        process.start()
    finally:
        config.clear()
        config.update(saved)


def _wait_ready(ranks: list[Any], ready: list[Any], timeout_s: float) -> None:
    """Until every other rank has loaded the model (and is about to join the group); a rank that
    died first (an import error, no memory) fails the run here, not after the group's timeout."""
    waiting = dict(zip(ready, ranks, strict=True))
    deadline = time.monotonic() + timeout_s
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{len(waiting)} data-parallel rank(s) did not start in {timeout_s:g} s")
        sentinels = {process.sentinel: process for process in waiting.values()}
        for done in mp_connection.wait([*waiting, *sentinels], left):
            if done in waiting:
                try:
                    done.recv()
                except EOFError:
                    continue  # it died: its sentinel says so
                del waiting[done]
            elif done in sentinels:
                process = sentinels[done]
                if process in waiting.values():
                    raise RuntimeError(
                        f"data-parallel rank process {process.name} exited with code {process.exitcode} "
                        "before it joined the group"
                    )


def _stop(ranks: list[Any], *, wait: float) -> None:
    """Let the other ranks exit (``wait`` seconds in all), then end those still there."""
    deadline = time.monotonic() + wait
    for process in ranks:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in ranks:
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def _watch_parent(parent: int) -> None:
    """Exit when rank 0's process is gone (kill -9 of the worker process): nobody else would."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="groundwork-ddp-parent-watch", daemon=True).start()


def _rank_main(
    rank: int,
    world: int,
    backend: str,
    store_path: str,
    timeout_s: float,
    parent: int,
    threads: int,
    model_bytes: bytes,
    examples: Sequence[training.Pair],
    hp: Hyperparameters,
    pad_id: int,
    checkpoint_dir: Path,
    kind: str,
    ready: Any,
) -> None:
    """A rank other than 0, in its own process: train on its share of every batch."""
    _watch_parent(parent)
    torch.set_num_threads(threads)
    device = devices.rank_device(kind, rank)
    devices.prepare(device)
    # Our own bytes from rank 0 (a whole module, so not weights-only).
    model = torch.load(io.BytesIO(model_bytes), map_location=device, weights_only=False)
    del model_bytes
    ready.send(True)
    ready.close()
    _join_group(rank, world, backend, store_path, timeout_s, device)
    try:
        training.train(
            model,
            examples,
            hp,
            pad_id=pad_id,
            checkpoint_dir=checkpoint_dir,
            report=lambda progress: True,  # never called: only rank 0 reports
            device=device,
        )
    except training.Cancelled:
        pass  # rank 0 was told to stop, and said so
    finally:
        dist.destroy_process_group()
