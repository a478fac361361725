"""The Gorilla-style generative router: a causal LM fine-tuned to emit the model name.

Training (paper §5): completion-only supervised fine-tuning on ``<Gorilla prompt> <model id><eos>``
(loss on the model id and the end of sequence only, label smoothing 0.05), LoRA through ``peft`` by
default (full fine-tuning with ``lora: false``), sequentially over the experiences; ``replay_fraction``
> 0 mixes in a random replay buffer (0 = sequential fine-tuning, the paper's Gorilla baseline).

``gorilla-rag`` (paper §5, "Gorilla RAG"): the same router with retrieval in its prompt, in training and
at routing alike (retriever-aware training): BM25 (the paper's tokenisation) over the cards seen so far
picks the best card for each prompt, and its JSON (first ``retrieved_chars`` characters) is appended to the
instruction as "Use this API documentation for reference: ..." (Gorilla's format).

Routing: decode (greedy by default; beam search with ``num_beams`` > 1 returns up to that many
names), then **snap** each generated name to the nearest model registered so far: exact match of the
normalised form first, else the best Levenshtein normalised similarity >= ``snap_threshold`` (0.8, as
the paper's evaluation). The comparison is between normalised forms (lower case, no white space) of
the generated text and of each id round-tripped through the tokenizer, so tokenizers that split or
lower-case ids do not hurt. A name that snaps to nothing is returned as generated: the router can
answer ids outside the registry, so evaluate it with ``on_unknown_id="count"``
(``cmrbench evaluate --on-unknown-id count``); those answers are the hallucination rate.

For GPU users: ``backbone=llama-7b`` (huggyllama/llama-7b), ``qwen2.5-7b``, ``qwen3-4b`` or any causal LM
folder, ``dtype=bfloat16``. On CPU it is tested with a tiny random LLaMA (:func:`tiny_causal_lm`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from cmrbench.data import Experience
from cmrbench.protocol import Ranking, RouterMeta
from cmrbench.fileio import atomic_write_text

from cmrbench.baselines.retrieval.bm25 import TOKENIZERS, SparseBM25
from cmrbench.baselines.retrieval.cardtext import card_text

from .backbone import DTYPES, GORILLA_TEMPLATE, load_tokenizer, lora_target_modules, pick_device, resolve_backbone
from .config import load_config
from .buffer import ReplayBuffer
from .router import backbone_label, deterministic, examples_from
from .training import seeded_generator

log = logging.getLogger("cmrbench.trainable")
VERSION = "1"
UNSNAPPED = "<no output>"


def normalise_name(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


class Snapper:
    """Generated text -> the registered id it names (or None): exact normalised match, then Levenshtein."""

    def __init__(self, ids: Sequence[str], canonical: Sequence[str], threshold: float = 0.8):
        from rapidfuzz.distance import Levenshtein

        self.ids = list(ids)
        self.threshold = float(threshold)
        self.forms = [normalise_name(c) for c in canonical]
        self.exact: dict[str, str] = {}
        for model_id, form in zip(self.ids, self.forms):
            self.exact.setdefault(form, model_id)
        self._similarity = Levenshtein.normalized_similarity

    def __call__(self, text: str) -> tuple[str | None, float]:
        form = normalise_name(text)
        if form in self.exact:
            return self.exact[form], 1.0
        if not form or not self.forms:
            return None, 0.0
        from rapidfuzz import process

        best = process.extractOne(form, self.forms, scorer=self._similarity, score_cutoff=self.threshold)
        if best is None:
            return None, 0.0
        _, score, index = best
        return self.ids[index], float(score)


class CardIndex:
    """BM25 over the cards seen so far (the authors' tokenisation): the retriever of ``gorilla-rag``."""

    def __init__(self, max_chars: int):
        self.max_chars = int(max_chars)
        self.cards = pl.DataFrame(schema={"card_id": pl.String, "model_id": pl.String, "card": pl.String})
        self.texts: list[str] = []
        self.bm25: SparseBM25 | None = None

    def add(self, cards: pl.DataFrame) -> None:
        known = self.cards["card_id"].to_list()
        new = cards.select("card_id", "model_id", "card").filter(~pl.col("card_id").is_in(known))
        if new.height:
            self.cards = pl.concat([self.cards, new])
            self.texts = [card_text(c, "json") or m for c, m in self.cards.select("card", "model_id").rows()]
            self.bm25 = SparseBM25([TOKENIZERS["paper"](t) for t in self.texts])

    def best(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt's best card text (its first ``max_chars`` characters); ties to the earlier card."""
        if self.bm25 is None:
            return [""] * len(prompts)
        scores = self.bm25.scores([TOKENIZERS["paper"](p) for p in prompts])
        return [self.texts[i][:self.max_chars] for i in np.argmax(scores, axis=1)]


class GenerativeRouter:
    """Gorilla-style router: a causal LM (LoRA) generates the model id; outputs snapped to registered ids."""

    config_name = "gorilla"

    def __init__(self, seed: int = 0, config: str | None = None, name: str | None = None, **overrides: Any):
        self.cfg = load_config(self.config_name, config, overrides)
        self.seed = int(seed)
        self.meta = RouterMeta(name=name or self.cfg.get("name") or "gorilla", version=VERSION,
                               description="Gorilla-style generative router: a causal LM fine-tuned to emit the "
                                           "model id, snapped to registered ids (Levenshtein >= 0.8)"
                                           + ("; the best BM25 card in its prompt (Gorilla RAG)"
                                              if self.cfg["retriever"] else ""),
                               reference="https://arxiv.org/abs/2305.15334",
                               parameters={**self.cfg, "seed": self.seed}, zero_shot=False,
                               training_data=[f"pre-trained causal LM {backbone_label(self.cfg['backbone'])}"])
        self.model = None
        self.tokenizer = None
        self.ids: list[str] = []           # append-only registry of model ids
        self.canonical: list[str] = []
        self.buffer = ReplayBuffer(self.cfg["replay_fraction"], seed=self.seed)
        self.finished = 0
        self.history: list[dict[str, Any]] = []
        self._snapper: Snapper | None = None
        if self.cfg["retriever"] not in (None, "bm25"):
            raise ValueError(f"retriever must be bm25 or null, not {self.cfg['retriever']!r}")
        self.retriever = CardIndex(self.cfg["retrieved_chars"]) if self.cfg["retriever"] else None

    # ------------------------------------------------------------------------------------ building

    def ensure_model(self):
        if self.model is not None:
            return self.model
        from transformers import AutoModelForCausalLM

        c = self.cfg
        path = resolve_backbone(c["backbone"])
        self.device = pick_device(c["device"])
        self.tokenizer = load_tokenizer(path, decoder=True)
        torch.manual_seed(self.seed)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[c["dtype"]])
        if c["gradient_checkpointing"]:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()      # else checkpointed LoRA layers get no gradient
        if c["lora"]:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=int(c["lora_r"]), lora_alpha=int(c["lora_alpha"]), lora_dropout=float(c["lora_dropout"]),
                target_modules=lora_target_modules(model, c["lora_targets"]), task_type="CAUSAL_LM"))
        self.model = model.to(self.device)
        self.tracked = [n for n, p in self.model.named_parameters() if p.requires_grad]
        template = c["prompt_template"]
        self.template = GORILLA_TEMPLATE if template in ("auto", "gorilla") else template
        return self.model

    def _tracked(self) -> dict[str, torch.nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.tracked}

    # ------------------------------------------------------------------------------------ encoding

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
        ids = self._ids(self.template.format(prompt=prompt))
        ids = ids[-(self.cfg["max_seq_len"] - 1):]
        return ([bos] if bos is not None else []) + ids

    def with_documents(self, prompts: Sequence[str]) -> list[str]:
        """The prompts as the model reads them: with the best card appended when the router retrieves."""
        if self.retriever is None:
            return list(prompts)
        return [f"{p}\nUse this API documentation for reference: {doc}"
                for p, doc in zip(prompts, self.retriever.best(prompts))]

    def _example(self, prompt: str, model_id: str) -> tuple[list[int], list[int]]:
        prefix = self._prefix(prompt)
        target = self._ids(" " + model_id)[:self.cfg["max_new_tokens"] - 1] + [self.tokenizer.eos_token_id]
        return prefix + target, [-100] * len(prefix) + target

    def _register(self, model_ids: Sequence[str]) -> None:
        known = set(self.ids)
        for m in model_ids:
            if m not in known:
                known.add(m)
                self.ids.append(m)
                self.canonical.append(self.tokenizer.decode(self._ids(m), skip_special_tokens=True))
        self._snapper = None

    @property
    def snapper(self) -> Snapper:
        if self._snapper is None:
            self._snapper = Snapper(self.ids, self.canonical, self.cfg["snap_threshold"])
        return self._snapper

    # ------------------------------------------------------------------------------------ learning

    def learn(self, experience: Experience) -> None:
        with deterministic(self.cfg["deterministic"]):
            t = experience.current_experience
            model = self.ensure_model()
            known = set(self.ids)
            self._register([m for m in sorted(experience.classes_seen_so_far) if m not in known])
            if self.retriever is not None:
                self.retriever.add(experience.cards.filter(pl.col("model_id").is_in(experience.classes_seen_so_far)))
            current = examples_from(experience.train, t)
            stored = self.buffer.frame()
            examples = pl.concat([current, stored], how="vertical_relaxed") if stored is not None else current
            torch.manual_seed(self.seed * 1000 + t)
            start = time.perf_counter()
            loss = self._fit(model, examples, seed=self.seed * 1000 + t)
            if self.cfg["replay_fraction"] > 0:
                self.buffer.add_experience(t, current)
            self.finished = t
            self.history.append({"experience": t, "examples": examples.height, "final_loss": round(loss, 6),
                                 "seconds": round(time.perf_counter() - start, 3)})

    def _fit(self, model, examples: pl.DataFrame, seed: int) -> float:
        c = self.cfg
        prompts = self.with_documents(examples["prompt"].to_list())
        pairs = [self._example(p, m) for p, m in zip(prompts, examples["model_id"].to_list())]
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))
        bs, epochs = int(c["batch_size"]), int(c["epochs"])
        plan = []
        for epoch in range(epochs):
            order = torch.randperm(len(pairs), generator=seeded_generator(seed, 101, epoch)).tolist()
            plan.extend(order[lo:lo + bs] for lo in range(0, len(order), bs))
        total, warm = len(plan), int(c["warmup_steps"])
        pad = self.tokenizer.pad_token_id
        model.train()
        last = 0.0
        for step, rows in enumerate(plan):
            factor = (step + 1) / warm if warm and step < warm else max(0.0, 1 - (step - warm) / max(1, total - warm))
            for g in optimizer.param_groups:
                g["lr"] = float(c["lr"]) * factor
            length = max(len(pairs[i][0]) for i in rows)
            input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
            labels = torch.full((len(rows), length), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), length), dtype=torch.long)
            for j, i in enumerate(rows):
                ids, lab = pairs[i]
                input_ids[j, :len(ids)] = torch.tensor(ids)
                labels[j, :len(lab)] = torch.tensor(lab)
                mask[j, :len(ids)] = 1
            input_ids, labels, mask = input_ids.to(self.device), labels.to(self.device), mask.to(self.device)
            logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.float()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100, label_smoothing=float(c["label_smoothing"]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(params, float(c["grad_clip"]))
            optimizer.step()
            last = float(loss.detach())
        model.eval()
        return last

    # ------------------------------------------------------------------------------------ routing

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], n: int) -> list[list[tuple[str, float]]]:
        """Raw generated names per prompt (up to ``n`` beams), with a score (sequence log-prob or rank)."""
        model = self.ensure_model()
        model.eval()
        c = self.cfg
        pad = self.tokenizer.pad_token_id
        prefixes = [self._prefix(p) for p in self.with_documents(prompts)]
        length = max(len(p) for p in prefixes)
        input_ids = torch.full((len(prefixes), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prefixes), length), dtype=torch.long)
        for j, ids in enumerate(prefixes):                       # left padding for generation
            input_ids[j, length - len(ids):] = torch.tensor(ids)
            mask[j, length - len(ids):] = 1
        beams = max(1, int(c["num_beams"]))
        out = model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                             max_new_tokens=int(c["max_new_tokens"]), do_sample=False, num_beams=beams,
                             num_return_sequences=min(n, beams), eos_token_id=self.tokenizer.eos_token_id,
                             pad_token_id=pad, output_scores=False, return_dict_in_generate=True)
        seqs = out.sequences[:, length:].cpu()
        per = min(n, beams)
        texts = self.tokenizer.batch_decode(seqs, skip_special_tokens=True)
        scores = (out.sequences_scores.cpu().tolist() if getattr(out, "sequences_scores", None) is not None
                  else [0.0] * len(texts))
        return [[(texts[i * per + r].strip(), float(scores[i * per + r])) for r in range(per)]
                for i in range(len(prefixes))]

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        if not self.ids:
            raise RuntimeError("route() before learn(): no model is registered yet")
        out = []
        with deterministic(self.cfg["deterministic"]):
            generated = self.generate(list(prompts), top_k)
        for candidates in generated:
            ranking: list[tuple[str, float]] = []
            taken = set()
            for rank, (text, _score) in enumerate(candidates):
                model_id, _sim = self.snapper(text)
                if model_id is None:
                    model_id = text.strip() or UNSNAPPED      # a hallucination, reported as such
                if model_id in taken:
                    continue
                taken.add(model_id)
                ranking.append((model_id, float(len(candidates) - rank)))
            out.append(ranking[:top_k])
        return out

    # ------------------------------------------------------------------------------------ checkpoints

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.ensure_model()
        torch.save({n: p.detach().cpu() for n, p in self._tracked().items()}, folder / "weights.pt")
        frames = self.buffer.state_frames()
        if self.retriever is not None:
            frames["retrieval_cards"] = self.retriever.cards
        for name, frame in frames.items():
            frame.write_parquet(folder / f"{name}.parquet")
        info = {"router": self.meta.name, "strategy": self.config_name, "seed": self.seed, "config": self.cfg,
                "finished": self.finished, "ids": self.ids, "canonical": self.canonical, "history": self.history,
                "frames": sorted(frames)}
        atomic_write_text(folder / "router.json", json.dumps(info, indent=1, sort_keys=True))

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        info = json.loads((folder / "router.json").read_text())
        self.cfg, self.seed = info["config"], int(info["seed"])
        self.model = None
        self.ensure_model()
        state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        with torch.no_grad():
            for n, p in self._tracked().items():
                p.copy_(state[n].to(p.device, p.dtype))
        self.ids, self.canonical = list(info["ids"]), list(info["canonical"])
        self._snapper = None
        self.finished, self.history = int(info["finished"]), list(info["history"])
        self.buffer = ReplayBuffer(self.cfg["replay_fraction"], seed=self.seed)
        frames = {n: pl.read_parquet(folder / f"{n}.parquet") for n in info.get("frames", [])}
        if self.retriever is not None:
            self.retriever = CardIndex(self.cfg["retrieved_chars"])
            self.retriever.add(frames.pop("retrieval_cards"))
        self.buffer.load_frames(frames)


class GorillaRAGRouter(GenerativeRouter):
    """``gorilla-rag``: the generative router with the best BM25 card in its prompt (``configs/gorilla-rag.yaml``)."""

    config_name = "gorilla-rag"
