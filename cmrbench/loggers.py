"""Loggers: what a run reports after each experience, to a CSV file, TensorBoard, Weights & Biases or Trackio.

A logger is any object with ``log_experience(t, results)`` and ``close()`` (:class:`Logger`); ``evaluate``
calls it after every experience it finishes, with the results as they stand then. The metrics of experience
``t`` (:func:`experience_metrics`) are, per level (model, family, domain): the accuracy on the experience just
learnt (``current``), the average over every test set seen so far (``average``, the final average accuracy of
the stream cut at ``t``) and the forgetting so far (``forgetting``, from ``t = 2``); then the seconds spent
learning and routing. On the command line: ``--log csv:runs/log.csv --log tensorboard:runs/tb``
(``wandb:PROJECT``, ``trackio:PROJECT``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from . import metrics as M
from .fileio import atomic_write_text

if TYPE_CHECKING:
    from .results import Results

INSTALL_HINT = "pip install 'cmrbench[loggers]'"
KINDS = ("csv", "tensorboard", "wandb", "trackio")


@runtime_checkable
class Logger(Protocol):
    def log_experience(self, t: int, results: Results) -> None: ...

    def close(self) -> None: ...


def experience_metrics(t: int, results: Results) -> dict[str, float]:
    """The metrics of experience ``t`` (1-based) from a results object that has finished it, in percent."""
    out: dict[str, float] = {}
    for level, by_metric in results.matrices.items():
        A = np.array([[np.nan if v is None else v for v in row] for row in by_metric["acc@1"]], dtype=float)[:t, :t]
        out[f"{level}/current"] = 100 * float(A[t - 1, t - 1])
        out[f"{level}/average"] = 100 * M.final_average_accuracy(A)
        if t > 1:
            out[f"{level}/forgetting"] = 100 * M.forgetting(A)
    out["time/learn_seconds"] = float(results.timings.learn_seconds[t - 1])
    out["time/route_seconds"] = float(results.timings.route_seconds[t - 1])
    return out


class CSVLogger:
    """One row per finished experience, rewritten whole (atomically) from the results, so a resumed run's file
    is complete too."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def log_experience(self, t: int, results: Results) -> None:
        rows = [{"experience": k, **experience_metrics(k, results)} for k in range(1, t + 1)]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
        atomic_write_text(self.path, buffer.getvalue())

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars per experience (step = experience) in a TensorBoard log folder, and the router's settings as text."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(f"the tensorboard logger needs tensorboard: {INSTALL_HINT} ({err})") from err
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self._described = False

    def log_experience(self, t: int, results: Results) -> None:
        if not self._described:
            self.writer.add_text("router", f"`{results.router.model_dump_json()}`", 0)
            self._described = True
        for key, value in experience_metrics(t, results).items():
            self.writer.add_scalar(key, value, global_step=t)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _RunTracker:
    """Weights & Biases and Trackio share one API: ``init(project, name, config)``, ``log(dict, step)``,
    ``finish()``; the run starts at the first experience, named after the router and seed. A subclass names the
    module and any extra ``init`` options."""

    module_name = ""
    init_options: dict = {}

    def __init__(self, project: str):
        import importlib

        try:
            self.module = importlib.import_module(self.module_name)
        except ImportError as err:
            raise ImportError(f"the {self.module_name} logger needs {self.module_name}: {INSTALL_HINT}") from err
        self.project = project
        self.run = None

    def log_experience(self, t: int, results: Results) -> None:
        if self.run is None:
            self.run = self.module.init(
                project=self.project, name=f"{results.router.name}-seed{results.seed}",
                config={"router": results.router.model_dump(mode="json"), "seed": results.seed,
                        "dataset": results.dataset.model_dump(mode="json")}, **self.init_options)
        self.run.log(experience_metrics(t, results), step=t)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class WandbLogger(_RunTracker):
    """Weights & Biases (``WANDB_MODE=offline`` keeps the run on disk; ``wandb sync`` uploads it later)."""

    module_name = "wandb"


class TrackioLogger(_RunTracker):
    """Trackio (local-first: a SQLite file under ``$TRACKIO_DIR``; ``trackio show`` opens the dashboard)."""

    module_name = "trackio"
    init_options = {"auto_log_cpu": False}


def make_logger(spec: str) -> Logger:
    """``KIND:TARGET`` -> a logger: ``csv:FILE``, ``tensorboard:DIR``, ``wandb:PROJECT``, ``trackio:PROJECT``."""
    kind, sep, target = spec.partition(":")
    if not sep or not target or kind not in KINDS:
        raise ValueError(f"--log {spec!r}: expected KIND:TARGET with KIND one of {', '.join(KINDS)} "
                         "(e.g. csv:runs/log.csv, tensorboard:runs/tb, wandb:my-project, trackio:my-project)")
    return {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "wandb": WandbLogger,
            "trackio": TrackioLogger}[kind](target)
