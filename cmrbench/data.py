"""Loading a built CMRBench folder and handing out experiences, with future and test information hidden.

Vocabulary follows Avalanche: a benchmark has a ``train_stream`` of experiences; each experience knows
its ``current_experience`` (1-based, as the dataset's ``experience_N`` configs), the model ids present in
it (``classes_in_this_experience``), those seen before (``previous_classes``) and all seen so far
(``classes_seen_so_far``). The learner's view never contains test prompts or anything from a later
experience; reaching for them raises :class:`HiddenInformationError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

from .fileio import sha256_file
from .manifest import Manifest

MANIFEST = "manifest.json"
LEARNER_COLUMNS = ["prompt_id", "prompt", "model_id", "family", "domain", "category", "task"]
TEST_COLUMNS = ["prompt_id", "prompt", "model_id", "family", "domain", "experience"]


def default_data_dir() -> Path:
    """Where `cmrbench build` writes by default: the user cache folder, named by dataset version (cmrbench-v1)."""
    import platformdirs

    from . import DATASET_VERSION

    return Path(platformdirs.user_cache_dir("cmrbench")) / f"cmrbench-{DATASET_VERSION}"


class HiddenInformationError(AttributeError):
    """The learner asked for test prompts or for information from a later experience."""


class DatasetFolderError(FileNotFoundError):
    """A folder is not a usable CMRBench build."""


@dataclass(frozen=True)
class LabelRegistry:
    """Labels of the models seen so far: each model id -> every family / domain it carries."""

    families: dict[str, frozenset[str]]
    domains: dict[str, frozenset[str]]

    @property
    def model_ids(self) -> frozenset[str]:
        return frozenset(self.families)


class Experience:
    """What a router may know when it learns experience ``current_experience``.

    Built eagerly from the allowed data and holding no reference to the benchmark, so nothing from
    test splits or later experiences is reachable from it.
    """

    _HIDDEN = {"test", "test_stream", "future", "next_experience"}

    def __init__(self, current_experience: int, n_experiences: int, train: pl.DataFrame,
                 validation: pl.DataFrame, classes_in_this_experience: list[str], previous_classes: list[str],
                 models: pl.DataFrame, cards: pl.DataFrame):
        self.current_experience = current_experience
        self.n_experiences = n_experiences
        self.train = train                      # prompt_id, prompt, model_id, family, domain, category, task
        self.validation = validation
        self.classes_in_this_experience = classes_in_this_experience  # model ids present in this experience
        self.previous_classes = previous_classes                      # model ids of earlier experiences
        self.classes_seen_so_far = sorted(set(classes_in_this_experience) | set(previous_classes))
        self.new_classes_in_this_experience = sorted(set(classes_in_this_experience) - set(previous_classes))
        self.models = models    # one row per model seen so far: model_id, families, domains (labels so far), card
        self.cards = cards      # released card collection up to now: card_id, model_id, experience, domain, card

    def __getattr__(self, name: str):
        if name in self._HIDDEN:
            raise HiddenInformationError(
                f"experience {self.current_experience}: '{name}' is hidden from the learner; routers see only "
                "train/validation prompts and models seen so far. Test prompts reach the router through route().")
        raise AttributeError(name)

    def __repr__(self) -> str:
        return (f"Experience({self.current_experience}/{self.n_experiences}, train={self.train.height}, "
                f"models={len(self.classes_in_this_experience)}, seen={len(self.classes_seen_so_far)})")


EVAL_SPLITS = ("test", "validation")


class Benchmark:
    """A built CMRBench folder (Parquet + manifest), read with polars.

    ``eval_split="validation"`` is the development protocol: routers are scored on each experience's
    validation prompts, which are then withheld from the learner (its ``validation`` frame is empty), so
    hyper-parameters can be chosen without looking at the test splits. Such runs carry the split in their
    name and are refused by the leaderboard.
    """

    def __init__(self, folder: str | Path, eval_split: str = "test"):
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, not {eval_split!r}")
        self.eval_split = eval_split
        self.folder = Path(folder).expanduser().resolve()
        path = self.folder / MANIFEST
        if not path.is_file():
            raise DatasetFolderError(f"{self.folder} is not a CMRBench folder (no {MANIFEST}); build one with "
                                     "`cmrbench build --out DIR` or `cmrbench mock-data --out DIR`.")
        self.manifest_bytes = path.read_bytes()
        try:
            self.manifest = Manifest.model_validate_json(self.manifest_bytes).model_dump()
        except ValueError as err:
            raise DatasetFolderError(f"{path} is not a valid CMRBench manifest: {err}") from None
        self.n_experiences = int(self.manifest["experiences"])
        self._rows: dict[int, pl.DataFrame] = {}
        self._verify_files()

    def _verify_files(self) -> None:
        """Every data file must be the one the manifest lists: an edited split would give inflated results
        that still carry the genuine manifest hash."""
        for rel, digest in self.manifest["files"].items():
            path = self.folder / rel
            if not path.is_file():
                raise DatasetFolderError(f"{path} is listed in {MANIFEST} but missing; rebuild the folder.")
            if sha256_file(path) != digest:
                raise DatasetFolderError(f"{path} differs from the file {MANIFEST} lists (sha256); the build was "
                                         "modified: rebuild it with `cmrbench build --overwrite`.")

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def name(self) -> str:
        name = f"{self.manifest['dataset']}-{self.manifest['dataset_version']}-{self.manifest['stream']}"
        return name if self.eval_split == "test" else f"{name}-{self.eval_split}"

    def _read(self, rel: str) -> pl.DataFrame:
        path = self.folder / rel
        if rel not in self.manifest["files"]:
            raise DatasetFolderError(f"{path} is not listed in {MANIFEST}; rebuild the folder.")
        try:
            return pl.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - polars raises several types for a damaged file
            raise DatasetFolderError(f"{path} cannot be read as Parquet ({err}); rebuild the folder.") from None

    def rows(self, t: int) -> pl.DataFrame:
        if not 1 <= t <= self.n_experiences:
            raise IndexError(f"experience {t} does not exist (1..{self.n_experiences})")
        if t not in self._rows:
            self._rows[t] = pl.concat([self._read(f"experience_{t}/{s}.parquet")
                                       for s in ("train", "validation", "test")])
        return self._rows[t]

    def split(self, t: int, split: str) -> pl.DataFrame:
        return self.rows(t).filter(pl.col("split") == split)

    def experience_models(self, t: int) -> set[str]:
        return set(self.rows(t)["model_id"].unique().to_list())

    @cached_property
    def models(self) -> pl.DataFrame:
        return self._read("models/models.parquet")

    @cached_property
    def cards(self) -> pl.DataFrame:
        return self._read("cards/cards.parquet")

    def label_registry(self, t: int) -> LabelRegistry:
        """Families and domains of every model, from the rows of experiences 1..t only."""
        rows = pl.concat([self.rows(k).select("model_id", "family", "domain") for k in range(1, t + 1)])
        fam = rows.group_by("model_id").agg(pl.col("family").unique())
        dom = rows.group_by("model_id").agg(pl.col("domain").unique())
        return LabelRegistry({m: frozenset(f) for m, f in fam.rows()}, {m: frozenset(d) for m, d in dom.rows()})

    def experience(self, t: int) -> Experience:
        """The learner's view of experience ``t``."""
        reg = self.label_registry(t)
        known = self.models.filter(pl.col("model_id").is_in(sorted(reg.model_ids)))
        models = pl.DataFrame({
            "model_id": known["model_id"],
            "families": [sorted(reg.families[m]) for m in known["model_id"]],
            "domains": [sorted(reg.domains[m]) for m in known["model_id"]],
            "card": known["card"],
        }, schema={"model_id": pl.String, "families": pl.List(pl.String), "domains": pl.List(pl.String),
                   "card": pl.String})
        previous = sorted(set().union(set(), *(self.experience_models(k) for k in range(1, t))))
        validation = self.split(t, "validation").select(LEARNER_COLUMNS)
        if self.eval_split == "validation":
            validation = validation.clear()
        return Experience(t, self.n_experiences, self.split(t, "train").select(LEARNER_COLUMNS),
                          validation, sorted(self.experience_models(t)),
                          previous, models, self.cards.filter(pl.col("experience") <= t))

    @property
    def train_stream(self) -> "_Stream":
        return _Stream(self)

    def test_set(self, t: int) -> pl.DataFrame:
        """The scored prompts of experience ``t`` (its ``eval_split``) with gold labels: for the evaluator,
        never the learner."""
        return self.split(t, self.eval_split).select(TEST_COLUMNS).sort("prompt_id")


class _Stream:
    """``benchmark.train_stream[t - 1]`` builds experience t's view on demand."""

    def __init__(self, benchmark: Benchmark):
        self._benchmark = benchmark

    def __len__(self) -> int:
        return self._benchmark.n_experiences

    def __getitem__(self, index: int) -> Experience:
        if not -len(self) <= index < len(self):
            raise IndexError(f"train_stream has {len(self)} experiences")
        return self._benchmark.experience(index % len(self) + 1)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
