"""APIBench (Gorilla) prompt rows: experience E1 from the Hugging Face subset, plus optional extras.

E1 (``hub="huggingface"``) follows the paper (§3.4): the prompt is the ``code`` text before
``###Output``, the label is the HF repo id parsed from ``api_call`` (see :func:`parse_model_id`; when
that names none, ``api_data.api_name``), the domain is ``api_data.domain`` (checked against the
taxonomy) and the card is ``api_data`` without its bulky fields. Creation dates come from the HF
metadata snapshot, clamped to 2023-05-24; a model the snapshot lacks gets null (the paper fills in
the mean date; that is left to whoever needs a value).

The TensorFlow Hub and Torch Hub pairs (``hub="tensorflowhub"`` / ``"torchhub"``) are optional extra
experiences, not part of the default stream. Their labels are hub addresses, not HF repo ids: the
tfhub.dev URL for TF Hub; for Torch Hub ``repo:model`` from ``torch.hub.load`` with the repo's version
tag dropped (so one model keeps one label), or the bare repo where the API names no entry point.
Their ``api_data.domain`` values ("Image classification", "Semantic Segmentation", ...) are hub task
names, mapped to HF tasks by ``taxonomy.HUB_TASKS`` so that extra experiences share the domain space
of the main stream (an unmapped name is quarantined). These rows have no creation date.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import polars as pl

from cmrbench.sources import SOURCES, SourceResolver

from .hub_metadata import api_data_card, load_model_info, sort_by_origin, with_created_at
from .records import PROMPT_SCHEMA, Quarantine, normalise_prompt, read_json_lines
from .taxonomy import UnknownDomainError, check_domain, domain_for_hub_task

APIBENCH_SCHEMA: dict[str, pl.DataType] = {**PROMPT_SCHEMA, "upstream_split": pl.String()}
HF_CUTOFF = date(2023, 5, 24)  # the paper clamps E1 creation dates here (APIBench release)
API_DOCS_KEY = "apibench/huggingface_api.jsonl"

# hub -> (upstream split, source key); optional sources are read only when present.
HUB_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "huggingface": (("eval", "apibench/huggingface_eval.json"), ("train", "apibench/huggingface_train.json")),
    "tensorflowhub": (("eval", "apibench/tensorflow_eval.json"), ("train", "apibench/tensorflow_train.json")),
    "torchhub": (("eval", "apibench/torchhub_eval.json"), ("train", "apibench/torchhub_train.json")),
}
_NAME = r"[A-Za-z0-9][\w.-]*"
_REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
_DOWNLOAD_MODEL = re.compile(rf"--download_model\s+({_NAME}/{_NAME})")
# An owner/name token, quoted or bare (upstream has typos such as from_pretrained(stabilityai/x) and
# source=speechbrain/x), but not a piece of a URL or path; "hf_hub:" prefixes and "@revision" suffixes
# are not part of the id.
_REPO_TOKEN = re.compile(rf"(?<![\w./:@-])(?:hf[_-]hub:)?({_NAME}/{_NAME})(?![\w./-])")
# ...and not a file inside a repo or folder, e.g. load('path_to_folder/sklearn_model.joblib').
_FILE_NAME = re.compile(r"\.(?:joblib|pkl|pickle|pt|pth|bin|ckpt|h5|onnx|safetensors|json|zip|gz|npz)$", re.IGNORECASE)
_MODEL_ARG = re.compile(rf"""(?:\bmodel\s*=\s*|from_pretrained\(\s*)['"]({_NAME})['"]""")
_TIMM = re.compile(rf"""timm\.create_model\(\s*['"]({_NAME})['"]""")
_HF_URL = re.compile(rf"huggingface\.co/({_NAME}/{_NAME})")
_TFHUB_URL = re.compile(r"""https?://tfhub\.dev/[^\s'"()?#]+""")
_TORCH_HUB = re.compile(r"""torch\.hub\.load\(\s*(?:repo_or_dir\s*=\s*)?['"]([^'"]+)['"]"""
                        r"""(?:\s*,\s*(?:model\s*=\s*)?['"]([^'"]+)['"])?""")
_OUTPUT = re.compile(r"#{2,}\s*Output", re.IGNORECASE)
# torchhub_train: "{'Instruction': <unquoted text>, 'Output': {...}}" -- not a Python literal.
_DICT_INSTRUCTION = re.compile(r"""^\s*\{\s*['"]Instruction['"]\s*:\s*(.*?),\s*['"]Output['"]\s*:""", re.DOTALL)


def parse_model_id(api_call: str) -> str | None:
    """HF repo id named in an APIBench ``api_call``, tried in the paper's order: ``--download_model x/y``,
    the first ``owner/name`` (quoted or not, never part of a URL or a file path), ``model='..'`` /
    ``from_pretrained('..')``, ``timm.create_model('x')`` (as ``timm/x``); last, an id inside a
    huggingface.co URL. None when nothing names a model."""
    if m := _DOWNLOAD_MODEL.search(api_call):
        return m.group(1)
    for m in _REPO_TOKEN.finditer(api_call):
        if not _FILE_NAME.search(m.group(1)):
            return m.group(1)
    if m := _MODEL_ARG.search(api_call):
        return m.group(1)
    if m := _TIMM.search(api_call):
        return f"timm/{m.group(1)}"
    if m := _HF_URL.search(api_call):
        return m.group(1)
    return None


def hf_model_id(api_call: str, api_name: object) -> str | None:
    """The label of an HF APIBench row: parsed from ``api_call``; failing that ``api_name`` itself when it
    is an ``owner/name`` id, or the id an ``api_name`` holding code names."""
    if model_id := parse_model_id(api_call):
        return model_id
    if not isinstance(api_name, str):
        return None
    name = api_name.strip()
    return name if _REPO_ID.fullmatch(name) else parse_model_id(name)


def tfhub_model_id(api_call: str) -> str | None:
    """The tfhub.dev URL in ``api_call``, normalised to https without a trailing slash."""
    m = _TFHUB_URL.search(api_call)
    return "https://" + m.group(0).split("://", 1)[1].rstrip("/") if m else None


def torchhub_model_id(api_call: str) -> str | None:
    """``repo:model`` from ``torch.hub.load('repo[:tag]', 'model')``; just ``repo`` where the API document
    names no entry point (pytorch/fairseq, huggingface/pytorch-transformers: the repo is the API)."""
    if not (m := _TORCH_HUB.search(api_call)):
        return None
    repo = m.group(1).split(":", 1)[0]
    return f"{repo}:{m.group(2)}" if m.group(2) else repo


def extract_instruction(code: str) -> str | None:
    """The user request in a ``code`` field: the text before ``###Output`` or, for the torchhub_train
    dict-like form, the Instruction value. None when the dict-like form cannot be read."""
    if code.lstrip().startswith("{"):
        m = _DICT_INSTRUCTION.match(code)
        if not m:
            return None
        text = m.group(1).strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        return text
    return _OUTPUT.split(code, maxsplit=1)[0]


# hub -> label of a row from (api_call, api_data.api_name).
_MODEL_ID: dict[str, Callable[[str, object], str | None]] = {
    "huggingface": hf_model_id,
    "tensorflowhub": lambda api_call, _api_name: tfhub_model_id(api_call),
    "torchhub": lambda api_call, _api_name: torchhub_model_id(api_call),
}


def _domain(hub: str, raw: str) -> str:
    """The row's domain label; raises UnknownDomainError for an HF domain outside the taxonomy."""
    return check_domain(raw) if hub == "huggingface" else domain_for_hub_task(raw)


def _row(hub: str, key: str, split: str, n: int, obj: dict, quarantine: Quarantine) -> dict | None:
    origin = f"{key}:{n}"
    for name in ("code", "api_call"):
        if not isinstance(obj.get(name), str):
            quarantine.add(origin, f"missing field: {name}", obj)
            return None
    api_data = obj.get("api_data")
    if not isinstance(api_data, dict):
        quarantine.add(origin, "missing field: api_data", obj)
        return None
    instruction = extract_instruction(obj["code"])
    if instruction is None:
        quarantine.add(origin, "unparsable code", obj)
        return None
    prompt = normalise_prompt(instruction)
    if not prompt:
        quarantine.add(origin, "empty prompt", obj)
        return None
    model_id = _MODEL_ID[hub](obj["api_call"], api_data.get("api_name"))
    if model_id is None:
        quarantine.add(origin, "no model id", obj)
        return None
    raw_domain = api_data.get("domain")
    if not isinstance(raw_domain, str) or not raw_domain.strip():
        quarantine.add(origin, "missing field: api_data.domain", obj)
        return None
    try:
        domain = _domain(hub, raw_domain.strip())
    except UnknownDomainError:
        quarantine.add(origin, "unknown domain", obj)
        return None
    return {"prompt": prompt, "model_id": model_id, "domain": domain, "created_at": None, "source": "APIBench",
            "modality": None, "origin": origin, "card": api_data_card(api_data, model_id), "upstream_split": split}


def build_apibench(resolver: SourceResolver, quarantine: Quarantine, hub: str = "huggingface") -> pl.DataFrame:
    """Prompt rows (APIBENCH_SCHEMA) of one APIBench hub, sorted by origin; rejected rows go to ``quarantine``."""
    if hub not in HUB_FILES:
        raise ValueError(f"unknown APIBench hub '{hub}'; expected one of {sorted(HUB_FILES)}")
    rows = []
    for split, key in HUB_FILES[hub]:
        if SOURCES[key].optional and not resolver.available(key):
            continue
        for n, obj in read_json_lines(resolver.resolve(key), key, quarantine):
            if (row := _row(hub, key, split, n, obj, quarantine)) is not None:
                rows.append(row)
    frame = pl.DataFrame(rows, schema=APIBENCH_SCHEMA)
    if hub == "huggingface":
        frame = with_created_at(frame, load_model_info(resolver), HF_CUTOFF)
    return sort_by_origin(frame).select(list(APIBENCH_SCHEMA))


def load_api_documents(resolver: SourceResolver, quarantine: Quarantine) -> dict[str, dict]:
    """HF model id -> its APIBench API document (the first one where a model has several); ids are
    derived as for the prompt rows so the two agree."""
    docs: dict[str, dict] = {}
    for n, obj in read_json_lines(resolver.resolve(API_DOCS_KEY), API_DOCS_KEY, quarantine):
        api_call = obj.get("api_call")
        model_id = hf_model_id(api_call, obj.get("api_name")) if isinstance(api_call, str) else None
        if model_id is None:
            quarantine.add(f"{API_DOCS_KEY}:{n}", "API document without model id", obj)
            continue
        docs.setdefault(model_id, obj)
    return docs
