"""Render the dataset card (README.md of a built folder) from the template in ``data_cards/``."""

from __future__ import annotations

import json
from importlib.resources import files
from string import Template

from .assemble import SPLITS

CARD_TEMPLATE = "dataset_card.md"


def _configs(configs: dict[str, dict[str, str]]) -> list[dict]:
    """The card's ``configs``: ``all`` (every experience, the default, so a bare ``load_dataset(folder)`` never
    silently returns one experience), then one per experience, ``models`` and ``cards``."""
    experiences = [name for name in configs if name.startswith("experience_")]
    everything = {"config_name": "all", "default": True, "data_files": [
        {"split": s, "path": [configs[e][s] for e in experiences]} for s in SPLITS]}
    return [everything] + [{"config_name": name, "data_files": [{"split": s, "path": p} for s, p in splits.items()]}
                           for name, splits in configs.items()]


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def card_data(manifest: dict, configs: dict[str, dict[str, str]]):
    """The card's metadata, as the Hub reads it (``huggingface_hub.DatasetCardData``)."""
    from huggingface_hub import DatasetCardData

    prompts = sum(int(s[x]) for s in manifest["statistics"] for x in SPLITS)
    return DatasetCardData(
        pretty_name="CMRBench", language=["en"], license="other", license_name="mixed-see-sources",
        license_link="LICENSE.md", size_categories=[_size_category(prompts)],
        source_datasets=["extended|APIBench (Gorilla, arXiv 2305.15334)",
                         "extended|ToolMMBench (MLLM-Tool, arXiv 2401.10727)",
                         "extended|HuggingBench (collagelab/CMR)"],
        task_categories=["text-classification"], tags=["model-routing", "continual-learning", "model-selection",
                                                        "arxiv:2605.28577"],
        configs=_configs(configs))


def render_license(manifest: dict) -> str:
    """LICENSE.md of a built folder: the data is a compilation, each part under its source's license."""
    rows = "\n".join(f"| `{k}` | {v['repo']}@{v['revision'][:7]} | {v['license']} |"
                     for k, v in manifest["sources"].items())
    return ("# Licenses of CMRBench " + manifest["dataset_version"] + "\n\n"
            "CMRBench is a compilation: every file in this folder is derived from the sources below and keeps "
            "their licenses. Model cards are written by each model's authors and carry the licenses of their "
            "repositories.\n\n| source | repository@commit | license |\n|---|---|---|\n" + rows + "\n")


def _stats_table(manifest: dict) -> str:
    head = ("| experience | models | new models | families | domains | new domains | "
            + " | ".join(SPLITS) + " | cards (cumulative) |")
    rule = "|" + "---|" * (head.count("|") - 1)
    rows = [f"| {s['experience']} | {s['models']:,} | {s['new_models']:,} | {s['families']:,} | {s['domains']} | "
            f"{s['new_domains']} | " + " | ".join(f"{s[x]:,}" for x in SPLITS) + f" | {s['cards']:,} |"
            for s in manifest["statistics"]]
    return "\n".join([head, rule, *rows])


def render_card(manifest: dict, configs: dict[str, dict[str, str]]) -> str:
    template = Template(files("cmrbench.data_cards").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8"))
    front = "---\n" + card_data(manifest, configs).to_yaml() + "\n---\n\n"
    agreement = manifest["notes"].get("family_agreement", {})
    sources = "\n".join(f"| `{k}` | {v['repo']}@{v['revision'][:7]} | {v['license']} | `{v['sha256'][:12]}…` |"
                        for k, v in manifest["sources"].items())
    missing = "\n".join(f"  - `{k}`" for k in manifest["missing_sources"]) or "  - none"
    quarantine = "\n".join(f"  - {reason}: {n:,}" for reason, n in manifest["quarantine"].items()) or "  - none"
    return front + template.substitute(
        stream=manifest["stream"], seed=manifest["seed"],
        dataset_version=manifest["dataset_version"], builder_version=manifest["builder_version"],
        stats_table=_stats_table(manifest), unique_models=f"{manifest['unique_models']:,}",
        unique_domains=manifest["unique_domains"], sources_table=sources, missing_sources=missing,
        quarantine=quarantine, family_agreement=json.dumps(agreement, sort_keys=True),
        family_exact=f"{100 * agreement.get('exact', float('nan')):.1f}",
        family_pair_f1=f"{100 * agreement.get('pair_f1', float('nan')):.1f}",
        family_ari=f"{agreement.get('ari', float('nan')):.3f}",
    )
