"""``tiny:`` references: tiny random models of real architectures and small data files, built
locally on first use (no download) so the bring-your-own-models path runs end to end anywhere.

A config may name, wherever it takes a model path or hub id or a dataset path:

* ``tiny:ARCH-LAYERSxWIDTH`` -- a random-initialized causal LM of ``ARCH`` (``gpt2``, ``llama``,
  ``qwen2``, ``gpt_neox``), with its own tokenizer and special tokens (Qwen2's has a ChatML chat
  template, Llama's adds a BOS, GPT-2's has no pad token -- what real checkpoints differ in);
* ``tiny:ARCH-LAYERSxWIDTH-rm`` -- the same as a one-label ``ForSequenceClassification`` (a gold RM);
* ``tiny:prompts`` / ``tiny:demos`` / ``tiny:preferences`` -- JSON-lines files of the synthetic
  task's prompts, demonstrations and (chosen, rejected) pairs ranked by its oracle.

``resolve(ref)`` builds what ``ref`` names once into ``~/.cache/rlhf-frontier/tiny/`` (written to a
temporary directory and renamed: concurrent jobs are safe) and returns its local path. Everything
downstream loads it by path, exactly as it loads a user's ``save_pretrained`` directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

VERSION = 1
ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox")
DATA = ("prompts", "demos", "preferences")
_SPEC = re.compile(r"^tiny:(?:(?P<data>prompts|demos|preferences)|(?P<arch>[a-z_0-9]+)-(?P<layers>\d+)x(?P<width>\d+)"
                   r"(?P<rm>-rm)?)$")
CHATML = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
          "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")


def is_tiny(ref: str) -> bool:
    return isinstance(ref, str) and ref.startswith("tiny:")


def check(ref: str, key: str = "") -> None:
    """Raise ``ValueError`` naming ``key`` if ``ref`` is a ``tiny:`` reference this module cannot build."""
    m = _SPEC.match(ref)
    if not m or (m["arch"] and m["arch"] not in ARCHS):
        raise ValueError(f"{key + ': ' if key else ''}{ref!r} is not a tiny reference: tiny:prompts, tiny:demos, "
                         f"tiny:preferences or tiny:ARCH-LAYERSxWIDTH[-rm] with ARCH one of {', '.join(ARCHS)}")
    if m["arch"]:
        layers, width = int(m["layers"]), int(m["width"])
        if not (1 <= layers <= 8 and 8 <= width <= 512 and width % 4 == 0):
            raise ValueError(f"{key + ': ' if key else ''}{ref!r}: tiny models have 1..8 layers, width 8..512, a multiple of 4")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlhf-frontier" / "tiny" / f"v{VERSION}"


def resolve(ref: str) -> str:
    """The local path of what ``ref`` names (built on first use); other references unchanged."""
    if not is_tiny(ref):
        return ref
    check(ref)
    m = _SPEC.match(ref)
    name = m["data"] + ".jsonl" if m["data"] else ref[5:]
    out = cache_root() / name
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        if m["data"]:
            _write_data(m["data"], tmp / name)
            os.replace(tmp / name, out)
        else:
            _build_model(m["arch"], int(m["layers"]), int(m["width"]), bool(m["rm"]), tmp)
            try:
                os.rename(tmp, out)
            except OSError:  # another process built it first
                if not out.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


# --------------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    from orchestrator.data.tasks import synthetic as T

    return T.corpus(0, 3000) + ["user assistant system"]


def _tokenizer(arch: str):
    """A word-level tokenizer over the synthetic task's words with ``arch``'s special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"gpt2": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
                "llama": {"bos_token": "<s>", "eos_token": "</s>"},
                "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                "gpt_neox": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<|padding|>"}}[arch]
    extra = ["<|im_start|>", "<|im_end|>"] if arch == "qwen2" else []
    toks = ["<unk>"] + list(dict.fromkeys(list(specials.values()) + extra))
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=toks))
    if arch == "llama":  # Llama's tokenizer adds BOS to every encoded text
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **specials)
    if arch == "qwen2":
        fast.chat_template = CHATML
    return fast


def _build_model(arch: str, layers: int, width: int, rm: bool, out: Path) -> None:
    import torch
    import transformers
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        Qwen2Config,
    )

    transformers.utils.logging.disable_progress_bar()  # a job's stderr stays one line on a user error
    tok = _tokenizer(arch)
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    heads = 4
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, n_positions=128, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    elif arch == "llama":
        cfg = LlamaConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=2, intermediate_size=2 * width, max_position_embeddings=128, **ids)
    elif arch == "qwen2":
        cfg = Qwen2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=2, intermediate_size=2 * width, max_position_embeddings=128,
                          tie_word_embeddings=True, **ids)
    else:
        cfg = GPTNeoXConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=2 * width, max_position_embeddings=128, hidden_dropout=0.0,
                            attention_dropout=0.0, **ids)
    torch.manual_seed(sum(map(ord, f"{arch}-{layers}x{width}-{rm}")))
    if rm:
        cfg.num_labels = 1
        if cfg.pad_token_id is None:
            cfg.pad_token_id = tok.eos_token_id
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def _write_data(kind: str, path: Path) -> None:
    from orchestrator.data.tasks import synthetic as T

    rng = random.Random(7)
    rows = T.make_prompts(3000, 11)
    with open(path, "w") as f:
        for r in rows:
            if kind == "prompts":
                rec = {"prompt": r["prompt"]}
            elif kind == "demos":
                rec = {"prompt": r["prompt"], "response": T.make_demonstration(r["family"], r["meta"], rng)}
            else:
                a, b = (T.make_demonstration(r["family"], r["meta"], rng) for _ in range(2))
                ga, gb = (T.oracle(r["family"], r["meta"], x)["gold"] for x in (a, b))
                if ga == gb:
                    continue
                rec = {"prompt": r["prompt"], "chosen": a if ga > gb else b, "rejected": b if ga > gb else a}
            f.write(json.dumps(rec) + "\n")
