"""Routers that try to read the answer key, for the integrity tests (importable by isolated workers too).

Each knows the models seen so far from its learner view and, when its trick finds nothing, answers with
them in id order: a trick that works scores far above chance, one that is blocked scores at chance.
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
import warnings
from pathlib import Path

import polars as pl

from cmrbench.protocol import RouterMeta


class _Base:
    name = "cheater"

    def __init__(self, seed: int = 0):
        self.meta = RouterMeta(name=self.name, zero_shot=True, description="tries to read the answer key")
        self.seen: list[str] = []

    def learn(self, experience) -> None:
        self.seen = sorted(experience.classes_seen_so_far)

    def answer(self, prompt: str, key: dict[str, str], top_k: int):
        first = key.get(prompt)
        rest = [m for m in self.seen if m != first]
        return ([(first, 2.0)] if first in self.seen else []) + [(m, 1.0) for m in rest[:top_k - (first in self.seen)]]

    def route(self, prompts, top_k):
        with warnings.catch_warnings():        # poking every object wakes deprecation warnings of other libraries
            warnings.simplefilter("ignore")
            key = self.steal(prompts)
        return [self.answer(p, key, top_k) for p in prompts]

    def steal(self, prompts) -> dict[str, str]:
        return {}


def _key_from_frame(frame: object) -> dict[str, str]:
    if isinstance(frame, pl.DataFrame) and {"prompt", "model_id"} <= set(frame.columns):
        return dict(zip(frame["prompt"].to_list(), frame["model_id"].to_list()))
    return {}


class StackCheater(_Base):
    """Walks the call stack for a local holding gold rows."""

    name = "stack-cheater"

    def steal(self, prompts):
        key: dict[str, str] = {}
        for info in inspect.stack()[1:]:
            for value in info.frame.f_locals.values():
                key.update(_key_from_frame(value))
        return key


class GcCheater(_Base):
    """Scans every object the garbage collector tracks for frames with prompts and gold model ids."""

    name = "gc-cheater"

    def steal(self, prompts):
        key: dict[str, str] = {}
        for obj in gc.get_objects():
            try:
                key.update(_key_from_frame(obj))
            except Exception:  # noqa: BLE001
                continue
        return key


class FileCheater(_Base):
    """Finds the build folder (an object with a ``folder`` holding test.parquet) and reads every test split."""

    name = "file-cheater"

    def steal(self, prompts):
        key: dict[str, str] = {}
        folders = {Path(os.getcwd())} | {Path(v) for k, v in os.environ.items() if k.startswith("CMRBENCH")}
        for obj in gc.get_objects():
            try:
                folder = getattr(obj, "folder", None)
                if isinstance(folder, Path):
                    folders.add(folder)
            except Exception:  # noqa: BLE001
                continue
        for folder in folders:
            for path in folder.glob("experience_*/test.parquet"):
                key.update(_key_from_frame(pl.read_parquet(path)))
        return key


class AskingForGold(_Base):
    """Declares needs_gold without being a reference row."""

    name = "asks-for-gold"
    needs_gold = True

    def route_with_gold(self, prompts, top_k, gold):
        return [self.answer(p, dict(zip(gold["prompt"], gold["model_id"])), top_k) for p in prompts]


class Exiting(_Base):
    """Exits the process in learn (sys.exit) or hard (os._exit) in experience 2."""

    name = "exiting"

    def __init__(self, seed: int = 0, hard: bool = False):
        super().__init__(seed)
        self.hard = hard

    def learn(self, experience) -> None:
        super().learn(experience)
        if experience.current_experience == 2:
            sys.stdout.flush()
            if self.hard:
                os._exit(0)
            sys.exit(0)


class Sleeping(_Base):
    """Never finishes learning."""

    name = "sleeping"

    def learn(self, experience) -> None:
        import time
        time.sleep(3600)
