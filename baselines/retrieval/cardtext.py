"""How a model card becomes the text a retriever indexes.

A CMRBench card is the JSON text of one Gorilla-style ``api_data`` object (domain, framework,
functionality, api_name, api_call, performance, description, model_name), exactly as the released
card index holds it.
"""

from __future__ import annotations

import json

TEMPLATES = ("json", "description")


def card_text(card_json: str, template: str = "json") -> str:
    """The document text of one card.

    ``template``:

    * ``"json"``: the paper's serialisation, the card's JSON string unchanged (the zero-shot
      retrieval baselines of the CMR paper index the JSON-serialised ``api_data``);
    * ``"description"``: the card's ``description`` only, stripped; when it is missing or empty,
      the ``api_name`` (then ``model_name``), else the empty string.

    Raises ``ValueError`` for an unknown template, or for a card that is not a JSON object when the
    template has to look inside it.
    """
    if template == "json":
        return card_json
    if template != "description":
        raise ValueError(f"unknown card template '{template}'; choose one of {', '.join(TEMPLATES)}")
    try:
        obj = json.loads(card_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"card is not valid JSON ({err.msg}): {card_json[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"card is not a JSON object: {card_json[:80]!r}")
    for field in ("description", "api_name", "model_name"):
        value = obj.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""
