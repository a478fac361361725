"""Domain labels: "<Category> <HF task>", the paper's taxonomy.

CMRBench keeps the released domain strings as they are (58 of them, including a few legacy
near-duplicates such as "Audio Classification" next to "Audio Audio Classification", which the
paper also keeps). New sources map an HF ``pipeline_tag`` to a domain with :func:`domain_for_task`.
"""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein

CATEGORIES = ("Multimodal", "Computer Vision", "Natural Language Processing", "Audio", "Tabular",
              "Reinforcement Learning", "Other")

# HF task id -> (category, task label) as the paper writes them.
TASKS: dict[str, tuple[str, str]] = {
    "audio-classification": ("Audio", "Audio Classification"),
    "audio-to-audio": ("Audio", "Audio-to-Audio"),
    "automatic-speech-recognition": ("Audio", "Automatic Speech Recognition"),
    "text-to-speech": ("Audio", "Text-to-Speech"),
    "text-to-audio": ("Audio", "Text-to-Audio"),
    "voice-activity-detection": ("Audio", "Voice Activity Detection"),
    "depth-estimation": ("Computer Vision", "Depth Estimation"),
    "image-classification": ("Computer Vision", "Image Classification"),
    "image-feature-extraction": ("Computer Vision", "Image Feature Extraction"),
    "image-segmentation": ("Computer Vision", "Image Segmentation"),
    "image-to-3d": ("Computer Vision", "Image-to-3D"),
    "image-to-image": ("Computer Vision", "Image-to-Image"),
    "image-to-text": ("Computer Vision", "Image-to-Text"),
    "image-to-video": ("Computer Vision", "Image-to-Video"),
    "keypoint-detection": ("Computer Vision", "Keypoint Detection"),
    "mask-generation": ("Computer Vision", "Mask Generation"),
    "object-detection": ("Computer Vision", "Object Detection"),
    "text-to-3d": ("Computer Vision", "Text-to-3D"),
    "text-to-image": ("Computer Vision", "Text-to-Image"),
    "text-to-video": ("Computer Vision", "Text-to-Video"),
    "unconditional-image-generation": ("Computer Vision", "Unconditional Image Generation"),
    "video-classification": ("Computer Vision", "Video Classification"),
    "video-to-video": ("Computer Vision", "Video-to-Video"),
    "zero-shot-image-classification": ("Computer Vision", "Zero-Shot Image Classification"),
    "zero-shot-object-detection": ("Computer Vision", "Zero-Shot Object Detection"),
    "audio-text-to-text": ("Multimodal", "Audio-Text-to-Text"),
    "document-question-answering": ("Multimodal", "Document Question Answering"),
    "image-text-to-text": ("Multimodal", "Image-Text-to-Text"),
    "video-text-to-text": ("Multimodal", "Video-Text-to-Text"),
    "visual-document-retrieval": ("Multimodal", "Visual Document Retrieval"),
    "visual-question-answering": ("Multimodal", "Visual Question Answering"),
    "graph-ml": ("Multimodal", "Graph Machine Learning"),
    "any-to-any": ("Multimodal", "Any-to-Any"),
    "feature-extraction": ("Natural Language Processing", "Feature Extraction"),
    "fill-mask": ("Natural Language Processing", "Fill-Mask"),
    "question-answering": ("Natural Language Processing", "Question Answering"),
    "sentence-similarity": ("Natural Language Processing", "Sentence Similarity"),
    "summarization": ("Natural Language Processing", "Summarization"),
    "table-question-answering": ("Natural Language Processing", "Table Question Answering"),
    "text-classification": ("Natural Language Processing", "Text Classification"),
    "text-generation": ("Natural Language Processing", "Text Generation"),
    "text2text-generation": ("Natural Language Processing", "Text2Text Generation"),
    "text-ranking": ("Natural Language Processing", "Text Ranking"),
    "token-classification": ("Natural Language Processing", "Token Classification"),
    "translation": ("Natural Language Processing", "Translation"),
    "zero-shot-classification": ("Natural Language Processing", "Zero-Shot Classification"),
    "conversational": ("Natural Language Processing", "Conversational"),
    "tabular-classification": ("Tabular", "Tabular Classification"),
    "tabular-regression": ("Tabular", "Tabular Regression"),
    "reinforcement-learning": ("Reinforcement Learning", "Reinforcement Learning"),
    "robotics": ("Reinforcement Learning", "Robotics"),
}

# Domain strings found in the authors' release that the task table does not produce; kept verbatim.
LEGACY_DOMAINS = frozenset({
    "Audio Classification",
    "Multimodal Document Question Answer",
    "Multimodal Feature Extraction",
    "Multimodal Image-to-Text",
    "Multimodal Text-to-Image",
    "Multimodal Text-to-Video",
    "Multimodal Zero-Shot Image Classification",
    "Reinforcement Learning",
    "Reinforcement Learning Robotics",
})

KNOWN_DOMAINS = frozenset({f"{c} {t}" for c, t in TASKS.values()}) | LEGACY_DOMAINS


# TF Hub / Torch Hub task names (APIBench's extra hubs) -> HF task, so extra experiences share the
# domain space of the main stream. Keys are lower-cased.
HUB_TASKS: dict[str, str] = {
    "image classification": "image-classification", "classification": "image-classification",
    "image feature vector": "image-feature-extraction", "image object detection": "object-detection",
    "object detection": "object-detection", "image pose detection": "keypoint-detection",
    "image segmentation": "image-segmentation", "semantic segmentation": "image-segmentation",
    "video classification": "video-classification", "text embedding": "feature-extraction",
    "text preprocessing": "feature-extraction", "text language model": "text-generation",
    "text classification": "text-classification", "audio event classification": "audio-classification",
    "audio embedding": "audio-classification", "audio separation": "audio-to-audio",
    "text-to-speech": "text-to-speech",
}


class UnknownDomainError(ValueError):
    """A domain string or task that the taxonomy does not know."""


def domain_for_task(task: str) -> str:
    """Domain of an HF pipeline tag, e.g. "fill-mask" -> "Natural Language Processing Fill-Mask"."""
    try:
        category, label = TASKS[task]
    except KeyError:
        raise UnknownDomainError(f"HF task '{task}' is not in the CMRBench taxonomy "
                                 f"(builders/taxonomy.py TASKS)") from None
    return f"{category} {label}"


def domain_for_hub_task(name: str) -> str:
    """Domain of a TF Hub / Torch Hub task name, e.g. "Semantic Segmentation" -> "Computer Vision Image
    Segmentation"."""
    try:
        return domain_for_task(HUB_TASKS[name.strip().lower()])
    except KeyError:
        raise UnknownDomainError(f"hub task '{name}' has no HF task in builders/taxonomy.py HUB_TASKS") from None


def match_task(tags: list[str], max_distance: float = 0.4) -> str | None:
    """The HF task closest to any of ``tags`` (normalised Levenshtein <= ``max_distance``), as the paper
    does for models without a pipeline tag; None if nothing is close enough."""
    best: tuple[float, str] | None = None
    for tag in tags:
        key = tag.strip().lower().replace("_", "-").replace(" ", "-")
        for task in TASKS:
            d = Levenshtein.normalized_distance(key, task)
            if d <= max_distance and (best is None or (d, task) < best):
                best = (d, task)
    return best[1] if best else None


def category_of(domain: str) -> str:
    """The category prefix of a domain string."""
    for category in sorted(CATEGORIES, key=len, reverse=True):
        if domain == category or domain.startswith(category + " "):
            return category
    raise UnknownDomainError(f"domain '{domain}' does not start with a known category {CATEGORIES}")


def task_of(domain: str) -> str:
    """The task part of a domain string ("Reinforcement Learning" alone is its own task)."""
    rest = domain[len(category_of(domain)):].strip()
    return rest or domain


def check_domain(domain: str) -> str:
    if domain not in KNOWN_DOMAINS:
        raise UnknownDomainError(f"unknown domain '{domain}': not produced by the taxonomy and not a "
                                 "known legacy label (builders/taxonomy.py)")
    return domain
