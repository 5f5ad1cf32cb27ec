"""How one model reads and writes text: its own tokenizer, prompt format, pad and eos.

Every model -- the policy, each proxy, each gold member -- gets a ``Codec`` built from the
tokenizer saved beside its weights, so a family of proxies with one tokenizer, a policy with a
chat template and a gold RM with another template can score the same (prompt, response) text
(OpenRLHF and TRL do the same: each RM re-tokenizes the decoded text with its own tokenizer).

Three formats, chosen from the tokenizer:

* ``task``: the embedded synthetic task's word-level tokenizer (``[BOS] prompt [SEP] response
  [EOS]``), unchanged, so the default's numbers stay bit-identical;
* ``chat``: the tokenizer has a chat template (and ``chat_template: auto``): the prompt is the user
  turn rendered with the generation prompt; a scored pair is the rendered two-turn conversation;
* ``plain``: the prompt's tokens as the tokenizer encodes text (its BOS where it adds one), the
  response's tokens after it, then eos.

The policy is trained on and samples ``prompt(p) + response(r)`` (response = its tokens + eos), so
SFT, sampling and the log-probs of the RL update see one sequence layout.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SPECIAL = ("[PAD]", "[BOS]", "[SEP]", "[EOS]", "[UNK]")  # the synthetic task's word-level tokenizer


class CodecError(ValueError):
    """A tokenizer or template that cannot be used (no pad and no eos token, a template that fails)."""


class Codec:
    def __init__(self, tok, max_len: int = 0, source: str = ""):
        """``tok``: a ``transformers`` tokenizer; ``max_len``: the model's longest input (0 = no
        limit; longer scored inputs keep their last ``max_len`` tokens); ``source``: where it came
        from (error messages)."""
        self.tok, self.max_len, self.source = tok, max_len, source
        if tok.bos_token == "[BOS]" and tok.sep_token == "[SEP]" and tok.eos_token == "[EOS]":
            self.format = "task"
        elif getattr(tok, "chat_template", None):
            self.format = "chat"
        else:
            self.format = "plain"
        if tok.eos_token_id is None and tok.pad_token_id is None:
            raise CodecError(f"{source or 'tokenizer'}: the tokenizer has neither a pad nor an eos token")
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id

    @property
    def key(self) -> str:
        """Two codecs with equal keys encode every text alike (an ensemble tokenizes once per key)."""
        if getattr(self, "_key", None) is None:
            self._key = self._digest()
        return self._key

    def _digest(self) -> str:
        h = hashlib.sha256(f"{self.format}|{self.max_len}|{len(self.tok)}|{self.tok.chat_template or ''}".encode())
        h.update(self.tok.backend_tokenizer.to_str().encode() if hasattr(self.tok, "backend_tokenizer") else b"")
        return h.hexdigest()[:16]

    def _text(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def prompt(self, prompt: str) -> list[int]:
        """The tokens the policy continues with a response."""
        if self.format == "task":
            return [self.tok.bos_token_id] + self._text(prompt) + [self.tok.sep_token_id]
        if self.format == "chat":
            return self._text(self._render([{"role": "user", "content": prompt}], True))
        return self.tok(prompt)["input_ids"]  # the tokenizer's own special tokens (Llama's BOS)

    def response(self, response: str) -> list[int]:
        """A response's tokens and eos: what the policy emits after ``prompt``."""
        return self._text(response) + [self.eos_id]

    def sequence(self, prompt: str, response: str) -> list[int]:
        """``prompt + response``: what SFT trains on."""
        return self.prompt(prompt) + self.response(response)

    def score_input(self, prompt: str, response: str) -> list[int]:
        """What a reward model reads for (prompt, response): the chat conversation with both turns
        where it has a template, else ``sequence``; at most ``max_len`` tokens (the last ones)."""
        if self.format == "chat":
            ids = self._text(self._render([{"role": "user", "content": prompt},
                                           {"role": "assistant", "content": response}], False))
        else:
            ids = self.sequence(prompt, response)
        return ids[-self.max_len:] if self.max_len and len(ids) > self.max_len else ids

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja errors of a user's template: name it, never half-render
            raise CodecError(f"{self.source or 'tokenizer'}: the chat template failed to render: "
                             f"{e.__class__.__name__}: {e}") from None

    def decode(self, rows: list[list[int]]) -> list[str]:
        return self.tok.batch_decode(rows, skip_special_tokens=True)

    def save(self, out_dir: str | Path) -> None:
        self.tok.save_pretrained(str(out_dir))


def has_tokenizer(path: str | Path) -> bool:
    p = Path(path)
    return any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json",
                                           "tokenizer.model"))


def max_positions(config) -> int:
    """The longest input a model's config allows (0 = unknown / unlimited)."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    for k in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        v = getattr(c, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return 0


def load_codec(path: str | Path, chat_template: str = "auto", max_len: int = 0) -> Codec:
    """The codec of the tokenizer saved in ``path`` (a model directory or hub id). ``chat_template``
    ``none`` ignores a template the tokenizer has; a generic ``tokenizers`` file (the synthetic task's)
    loads as ``PreTrainedTokenizerFast`` exactly as it was saved, anything else by ``AutoTokenizer``."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    cfg_file = p / "tokenizer_config.json"
    cls = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    if cls in ("PreTrainedTokenizerFast", "TokenizersBackend") and (p / "tokenizer.json").is_file():
        # a plain tokenizers file (the synthetic task's, the tiny models'): read as saved, never
        # re-interpreted through the model type's tokenizer class
        tok = PreTrainedTokenizerFast.from_pretrained(str(p))
    else:
        tok = AutoTokenizer.from_pretrained(str(path))
    if chat_template == "none":
        tok.chat_template = None
    return Codec(tok, max_len, str(path))
