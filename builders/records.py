"""The row contract every source builder produces, and the helpers they share.

A builder turns upstream files into a polars DataFrame of prompt rows with (at least)
:data:`PROMPT_COLUMNS`. Rows it cannot use go to a :class:`Quarantine` with the file, row and reason,
so nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

# Column -> dtype of the prompt rows a source builder returns.
PROMPT_SCHEMA: dict[str, pl.DataType] = {
    "prompt": pl.String(),        # the user request, "###Instruction:" prefix removed, whitespace collapsed
    "model_id": pl.String(),      # Hub repo id (or hub URL for TF Hub / Torch Hub extras): the label
    "domain": pl.String(),        # "<Category> <HF task>"
    "created_at": pl.Int64(),     # model creation time, ms since epoch (null when unknown)
    "source": pl.String(),        # "APIBench" | "ToolMMBench" | "HuggingBench" | ...
    "modality": pl.String(),      # input modality (ToolMMBench), else null
    "origin": pl.String(),        # "<source key>:<line number>" of the upstream row
    "card": pl.String(),          # the Gorilla-style api_data of the model as JSON text, or null
}
PROMPT_COLUMNS = list(PROMPT_SCHEMA)

_PREFIX = re.compile(r"^\s*#+\s*Instruction\s*:\s*", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def normalise_prompt(text: str) -> str:
    """Strip the Gorilla "###Instruction:" prefix and collapse whitespace (the stored prompt text)."""
    return _SPACE.sub(" ", _PREFIX.sub("", text)).strip()


def dedupe_key(text: str) -> str:
    """Key under which two prompts count as the same (case-insensitive normalised text)."""
    return normalise_prompt(text).casefold()


def prompt_id(experience: int, text: str, model_id: str) -> str:
    """Stable id: the same prompt for the same model in the same experience always gets the same id."""
    digest = hashlib.sha256(f"{experience}\x1f{dedupe_key(text)}\x1f{model_id}".encode()).hexdigest()
    return f"e{experience}-{digest[:16]}"


def empty_prompt_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=PROMPT_SCHEMA)


def prompt_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows (dicts with PROMPT_COLUMNS keys, missing ones null) as a typed frame."""
    if not rows:
        return empty_prompt_frame()
    return pl.DataFrame([{c: r.get(c) for c in PROMPT_COLUMNS} for r in rows], schema=PROMPT_SCHEMA)


class BuildInputError(ValueError):
    """An upstream file cannot be used; the message names the file and row."""


@dataclass
class Quarantine:
    """Rows set aside during a build, with the reason; written next to the built data."""

    rows: list[dict] = field(default_factory=list)

    def add(self, origin: str, reason: str, record: object = None) -> None:
        text = record if isinstance(record, str) or record is None else json.dumps(record, sort_keys=True,
                                                                                    ensure_ascii=False,
                                                                                    default=str)
        self.rows.append({"origin": origin, "reason": reason, "record": (text or "")[:2000]})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.rows).items()))

    def write(self, path: Path) -> None:
        """Gzipped JSON Lines, sorted; no time stamp or file name in the gzip header, so builds stay
        byte-identical. Compressed because the set-aside rows (mostly duplicates of kept prompts) were
        three-quarters the size of the data itself; ``zcat`` or ``pandas.read_json(path, lines=True)`` reads it."""
        lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in
                 sorted(self.rows, key=lambda r: (r["origin"], r["reason"]))]
        with path.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as out:
            out.write("".join(line + "\n" for line in lines).encode("utf-8"))


def read_json_lines(path: Path, key: str, quarantine: Quarantine) -> list[tuple[int, dict]]:
    """(line number, object) for each line of a JSON Lines file; malformed lines are quarantined."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                quarantine.add(f"{key}:{n}", f"malformed JSON ({err.msg})", line)
                continue
            if not isinstance(obj, dict):
                quarantine.add(f"{key}:{n}", "not a JSON object", line)
                continue
            out.append((n, obj))
    return out


def read_json_array(path: Path, key: str) -> list:
    """A file holding one JSON array; a broken file is a clear error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BuildInputError(f"{key} ({path}): not valid JSON at line {err.lineno}, column {err.colno}: "
                              f"{err.msg}") from err
    if not isinstance(data, list):
        raise BuildInputError(f"{key} ({path}): expected a JSON array, found {type(data).__name__}")
    return data
