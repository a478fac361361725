"""Isolated evaluation: the router runs in a worker process that only ever holds what the learner may know.

In the evaluating process a router could reach the answer key by walking the call stack, scanning the
garbage collector or reading the build folder it was given. Here the router is built inside a separate
process (``spawn``, so nothing of the parent's memory is inherited); the parent sends it each experience's
learner view (:class:`cmrbench.data.Experience`: train / validation prompts, models and cards seen so far)
and, for routing, prompt texts only. Test labels and the build folder's path never cross. The worker starts
in an empty temporary folder with the ``CMRBENCH_*`` variables removed from its environment.

The worker's crash, exit (``sys.exit``, ``os._exit``, a signal) or hang is a clear error naming the call, and
``learn`` / ``route`` time-outs kill it for real. What this does **not** stop: code that reads files the
operating system lets it read (a guessed default build path, the source mirror) or that uses the network.
Untrusted code needs OS-level isolation as well: a container or sandbox with only its own folder mounted and
no network (e.g. ``docker run --network none``), with cmrbench evaluating it from outside.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

from .protocol import Ranking, RouterMeta


class IsolationError(RuntimeError):
    """The router's worker process failed, exited, hung or refused a call; the message says which."""


def _worker(conn: Connection, spec: str, args: dict[str, Any], seed: int) -> None:
    """The worker's loop: build the router, then answer ``learn`` / ``route`` / ``save`` / ``load`` messages."""
    for key in [k for k in os.environ if k.startswith("CMRBENCH_")]:
        del os.environ[key]
    os.chdir(tempfile.mkdtemp(prefix="cmrbench-worker-"))
    try:
        from .harness import seed_everything
        from .protocol import CheckpointableRouter
        from .registry import load_router

        seed_everything(seed)
        router = load_router(spec, args, seed=seed)
        if getattr(router, "needs_gold", False):
            raise IsolationError(f"router '{router.meta.name}' reads the answer key (a reference row); reference "
                                 "rows are computed without --isolate")
        conn.send(("ready", router.meta.model_dump(mode="json"), isinstance(router, CheckpointableRouter)))
    except BaseException as err:  # noqa: BLE001 - everything is reported to the parent, which decides
        conn.send(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
        return
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:
            return
        if op == "stop":
            return
        try:
            if op == "learn":
                router.learn(payload)
                conn.send(("ok", None, router.meta.statistics))
            elif op == "route":
                prompts, top_k = payload
                conn.send(("ok", router.route(prompts, top_k), router.meta.statistics))
            elif op in ("save", "load"):
                getattr(router, op)(Path(payload))
                conn.send(("ok", None, router.meta.statistics))
            else:
                conn.send(("error", f"unknown operation {op!r}", ""))
        except SystemExit as err:
            conn.send(("error", f"called sys.exit({err.code!r}); a router must return or raise", ""))
        except BaseException as err:  # noqa: BLE001
            conn.send(("error", f"raised {type(err).__name__}: {err}", traceback.format_exc()))


class Worker:
    """The worker process of one router and the pipe to it."""

    def __init__(self, spec: str, args: dict[str, Any], seed: int, start_timeout: float = 600.0):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_worker, args=(child, spec, dict(args), int(seed)), daemon=True,
                                     name=f"cmrbench-router-{spec}")
        self._proc.start()
        child.close()
        reply = self._receive(start_timeout, f"router '{spec}': starting the worker")
        if reply[0] == "error":
            self.close()
            raise IsolationError(f"router '{spec}' could not be built in its worker: {reply[1]}")
        _, meta, self.checkpointable = reply
        self.meta = RouterMeta.model_validate(meta)

    def _receive(self, timeout: float | None, what: str) -> tuple:
        if not self._conn.poll(timeout):
            self.close()
            raise IsolationError(f"{what} did not answer within {timeout:g} s; the worker was stopped")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise IsolationError(f"{what}: the router's worker process ended (exit code {self._proc.exitcode}) "
                                 "without answering; a router must return or raise, never exit") from None

    def ask(self, op: str, payload: Any, timeout: float | None, what: str) -> Any:
        if not self._proc.is_alive():
            raise IsolationError(f"{what}: the router's worker process is no longer running")
        self._conn.send((op, payload))
        reply = self._receive(timeout, what)
        if reply[0] == "error":
            raise IsolationError(f"{what} {reply[1]}")
        self.meta.statistics = dict(reply[2])       # what the router counts about its run, for the results
        return reply[1]

    def close(self) -> None:
        """Stop the worker (one that will not stop is killed)."""
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
            except (OSError, ValueError):
                pass
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._conn.close()

    def __del__(self) -> None:  # a forgotten router must not leave its worker behind
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


class IsolatedRouter:
    """A router living in a worker process; speaks the :class:`~cmrbench.protocol.Router` protocol."""

    isolation = "process"

    def __init__(self, worker: Worker, timeout: float | None = None, learn_timeout: float | None = None):
        self.worker, self.meta = worker, worker.meta
        self.timeout, self.learn_timeout = timeout, learn_timeout

    def learn(self, experience) -> None:
        self.worker.ask("learn", experience, self.learn_timeout,
                        f"router '{self.meta.name}', experience {experience.current_experience}: learn()")

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        return self.worker.ask("route", (list(prompts), int(top_k)), self.timeout, f"router '{self.meta.name}': route()")

    def close(self) -> None:
        self.worker.close()


class IsolatedCheckpointableRouter(IsolatedRouter):
    """An isolated router whose inner router can save and restore itself (``--resume`` restores it)."""

    def save(self, folder: Path) -> None:
        self.worker.ask("save", str(folder), None, f"router '{self.meta.name}': save()")

    def load(self, folder: Path) -> None:
        self.worker.ask("load", str(folder), None, f"router '{self.meta.name}': load()")


def isolate(spec: str, args: dict[str, Any] | None = None, seed: int = 0, *, timeout: float | None = None,
            learn_timeout: float | None = None) -> IsolatedRouter:
    """Build router ``spec`` (as ``cmrbench evaluate --router`` names it) in a worker process."""
    worker = Worker(spec, dict(args or {}), seed)
    kind = IsolatedCheckpointableRouter if worker.checkpointable else IsolatedRouter
    return kind(worker, timeout=timeout, learn_timeout=learn_timeout)
