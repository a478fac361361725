"""Render the dataset card (README.md of a built folder) from the template in ``data_cards/``."""

from __future__ import annotations

import json
from importlib.resources import files
from string import Template

import yaml

from .assemble import SPLITS

CARD_TEMPLATE = "dataset_card.md"


def _configs_yaml(configs: dict[str, dict[str, str]]) -> str:
    entries = []
    for name, splits in configs.items():
        entry = {"config_name": name, "data_files": [{"split": s, "path": p} for s, p in splits.items()]}
        if name == "experience_1":
            entry["default"] = True
        entries.append(entry)
    return yaml.safe_dump({"configs": entries}, sort_keys=False, width=120)


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
    agreement = manifest["notes"].get("family_agreement", {})
    sources = "\n".join(f"| `{k}` | {v['repo']}@{v['revision'][:7]} | {v['license']} | `{v['sha256'][:12]}…` |"
                        for k, v in manifest["sources"].items())
    missing = "\n".join(f"  - `{k}`" for k in manifest["missing_sources"]) or "  - none"
    quarantine = "\n".join(f"  - {reason}: {n:,}" for reason, n in manifest["quarantine"].items()) or "  - none"
    return template.substitute(
        configs_yaml=_configs_yaml(configs).rstrip(), stream=manifest["stream"], seed=manifest["seed"],
        dataset_version=manifest["dataset_version"], builder_version=manifest["builder_version"],
        stats_table=_stats_table(manifest), unique_models=f"{manifest['unique_models']:,}",
        unique_domains=manifest["unique_domains"], sources_table=sources, missing_sources=missing,
        quarantine=quarantine, family_agreement=json.dumps(agreement, sort_keys=True),
        family_exact=f"{100 * agreement.get('exact', float('nan')):.1f}",
        family_pair_f1=f"{100 * agreement.get('pair_f1', float('nan')):.1f}",
        family_ari=f"{agreement.get('ari', float('nan')):.3f}",
    )
