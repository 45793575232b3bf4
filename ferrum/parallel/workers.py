"""One process per extra rank, driven in lockstep by rank 0 (the caller's process).

Rank 0 keeps the scheduler, the block manager and the sampler; each worker holds its shard of
the model and of the KV cache and only runs forwards. The control channel is one pipe per
worker: rank 0 sends `(method, args)` — a ModelRunner method name — and every rank then calls
that method; the collectives inside the forward keep the ranks in step. Only `execute_shard`
(every step: the forward, and with overlapped steps the broadcast of rank 0's sampled tokens,
which the next step's inputs read on the device) is fire-and-forget; set-up calls are answered,
so a worker that fails says why instead of leaving rank 0 waiting in a collective.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

import torch

from ferrum.config import EngineConfig
from ferrum.device import Backend, set_cpu_threads
from ferrum.errors import DeviceError, FerrumError
from ferrum.parallel.comm import LOOPBACK, destroy_group, init_group

log = logging.getLogger("ferrum.engine")

START_TIMEOUT_S = 600.0  # building and loading a shard (a cold 8B load is well under this)
CALL_TIMEOUT_S = 600.0  # a set-up call: memory profiling, cache allocation, graph capture
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
AUTHKEY_ENV = "FERRUM_TP_AUTHKEY"
AUTHKEY_BYTES = 16


@dataclass(frozen=True)
class ShardSpec:
    """What every rank needs to build its shard (sent to the workers at start)."""

    model: str
    config: EngineConfig
    device: str
    dtype: str
    random_weights: bool
    world_size: int
    port: int


def rank_device(device: str, rank: int) -> str:
    """cuda:<rank> when the engine runs on CUDA; the CPU is shared by all ranks."""
    return f"cuda:{rank}" if device == "cuda" else device


def cpu_threads_per_rank(world_size: int) -> int | None:
    """Split the cores between the ranks (None: the user set OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // world_size)


class WorkerGroup:
    """Rank 0's handle on ranks 1..n-1.

    Workers are fresh interpreters (`python -m ferrum.parallel.workers`), not multiprocessing
    children: those would re-import the user's script, which then needs a `__main__` guard.
    Each connects back to a loopback listener, authenticated with a key passed in the
    environment, says its rank and receives the ShardSpec."""

    def __init__(self, spec: ShardSpec) -> None:
        authkey = secrets.token_bytes(AUTHKEY_BYTES)
        self.listener = Listener((LOOPBACK, 0), authkey=authkey)
        host, port = self.listener.address
        env = dict(os.environ, **{AUTHKEY_ENV: authkey.hex()})
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ferrum.parallel.workers", host, str(port), str(rank)],
                env=env,
            )
            for rank in range(1, spec.world_size)
        ]
        self.conns: list[Connection] = []
        self.closed = False
        try:
            self.conns = self._accept(spec.world_size - 1)
            for conn in self.conns:
                conn.send(spec)
        except BaseException:
            self.close()
            raise

    def _accept(self, count: int) -> list[Connection]:
        """The workers' connections in rank order, failing fast if one of them dies."""
        accepted: dict[int, Connection] = {}

        def accept() -> None:
            with contextlib.suppress(OSError, EOFError):  # closed listener: we gave up
                while len(accepted) < count:
                    conn = self.listener.accept()
                    accepted[int(conn.recv())] = conn

        self._wait_for(accept, "tensor-parallel workers did not start")
        if len(accepted) < count:
            raise DeviceError("tensor-parallel workers did not connect")
        return [accepted[rank] for rank in range(1, count + 1)]

    def join_group(self, spec: ShardSpec, device: torch.device) -> None:
        """Rank 0 joins the process group; fails fast if a worker dies before it joins."""
        failure: list[BaseException] = []

        def join() -> None:
            try:
                init_group(0, spec.world_size, spec.port, device)
            except BaseException as exc:  # reported by the waiting thread below
                failure.append(exc)

        self._wait_for(join, "tensor-parallel workers did not join the process group")
        if failure:
            raise DeviceError(f"tensor-parallel rendezvous failed: {failure[0]}")

    def _wait_for(self, work: Callable[[], None], timeout_message: str) -> None:
        """Run `work` (which blocks on the workers) in a thread; meanwhile fail fast if a worker
        dies, and give up after START_TIMEOUT_S."""
        thread = threading.Thread(target=work, name="ferrum-tp-start", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while thread.is_alive():
            self.check_alive()
            if time.monotonic() > deadline:
                raise DeviceError(timeout_message)
            thread.join(POLL_S)

    def send(self, method: str, *args: Any) -> None:
        for conn in self.conns:
            try:
                conn.send((method, args))
            except (BrokenPipeError, OSError):
                self.check_alive()
                raise DeviceError("a tensor-parallel worker stopped") from None

    def gather(self, timeout: float = CALL_TIMEOUT_S) -> list[Any]:
        """Each worker's answer to the last answered call, in rank order."""
        results = []
        for conn in self.conns:
            deadline = time.monotonic() + timeout
            while not conn.poll(POLL_S):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise DeviceError(f"a tensor-parallel worker did not answer in {timeout:.0f} s")
            try:
                kind, value = conn.recv()
            except EOFError:
                self.check_alive()
                raise DeviceError("a tensor-parallel worker stopped") from None
            if kind == "error":
                raise DeviceError(f"tensor-parallel worker failed: {value}")
            results.append(value)
        return results

    def call(self, method: str, *args: Any) -> list[Any]:
        self.send(method, *args)
        return self.gather()

    def check_alive(self) -> None:
        for rank, proc in enumerate(self.procs, start=1):
            if proc.poll() is None:
                continue
            why = f"exit code {proc.returncode}"
            conn = self.conns[rank - 1] if rank <= len(self.conns) else None
            with contextlib.suppress(EOFError, OSError):
                if conn is not None and conn.poll():
                    kind, value = conn.recv()
                    if kind == "error":
                        why = value
            raise DeviceError(f"tensor-parallel worker {rank} stopped: {why}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", ()))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.conns:
            conn.close()
        self.listener.close()


def worker_main(rank: int, spec: ShardSpec, conn: Connection) -> None:
    """A worker: build this rank's shard, then run what rank 0 asks, until it closes."""
    from ferrum.engine.loading import build_llm
    from ferrum.engine.model_runner import ModelRunner
    from ferrum.parallel.apply import apply_tp

    try:
        backend = Backend.resolve(rank_device(spec.device, rank), spec.dtype)
        if backend.device.type == "cpu":
            set_cpu_threads(cpu_threads_per_rank(spec.world_size))
        init_group(rank, spec.world_size, spec.port, backend.device)
        built = build_llm(spec.model, backend, spec.random_weights, spec.config.seed)
        model = apply_tp(built.model, rank, spec.world_size)
        config = spec.config
        runner = ModelRunner(model, backend.device, backend.dtype, config.block_size, config)
        conn.send(("ok", None))
        _serve(runner, conn)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # rank 0 went away
    except BaseException as exc:
        detail = str(exc) if isinstance(exc, FerrumError) else traceback.format_exc(limit=4)
        with contextlib.suppress(BrokenPipeError, OSError):
            conn.send(("error", f"{type(exc).__name__}: {detail}"))
    finally:
        destroy_group()


def _serve(runner: Any, conn: Connection) -> None:
    while True:
        method, args = conn.recv()
        if method == "close":
            runner.close()  # captured collectives must go before the communicator
            return
        result = getattr(runner, method)(*args)
        if method != "execute_shard":  # the hot path is fire-and-forget
            conn.send(("ok", result))


def main(argv: list[str]) -> None:
    """`python -m ferrum.parallel.workers HOST PORT RANK`, started by WorkerGroup."""
    host, port, rank = argv[0], int(argv[1]), int(argv[2])
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY_ENV))
    conn = Client((host, port), authkey=authkey)
    conn.send(rank)
    spec = conn.recv()
    worker_main(rank, spec, conn)


if __name__ == "__main__":
    main(sys.argv[1:])
