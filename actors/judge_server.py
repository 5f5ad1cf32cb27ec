"""The local judge behind an OpenAI-compatible ``/v1/completions`` endpoint (Ray Serve).

What a vLLM server offers on a cluster, served here by the same ``HFBackend`` the in-process judge
uses, so ``AILabeler(backend="openai")`` is tested against a real HTTP server rather than a mock.
Supported: ``prompt`` (string or list), ``max_tokens``, ``temperature`` 0 (greedy only), ``logprobs``
(top-k of the first generated token, k <= 20), ``stop``. Requests from all callers are batched
(``serve.batch``). Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BATCH = 16


@serve.deployment(max_ongoing_requests=64)  # >= the batch size, or batches cap at the default 5
class JudgeServer:
    def __init__(self, path: str, model_name: str, threads: int = 1):
        from actors.judge_backends import HFBackend

        self.backend = HFBackend(path, threads=threads, batch_size=MAX_BATCH)
        self.model_name = model_name

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.02)
    async def _complete(self, items: list[tuple]) -> list[dict]:
        """items: (prompt, max_tokens, logprobs, stop) -> {"text", "top"}; grouped by options."""
        out: list = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, max_tokens, logprobs, stop) in enumerate(items):
            groups.setdefault((max_tokens, logprobs, stop), []).append(i)
        for (max_tokens, logprobs, stop), idx in groups.items():
            texts = [items[i][0] for i in idx]
            if logprobs:
                tops = self.backend.top_logprobs(texts, logprobs)
                for i, top in zip(idx, tops):
                    out[i] = {"text": max(top, key=top.get), "top": top}
                if max_tokens > 1:  # the rest of the text, greedy (logprobs only for the first token)
                    rest = self.backend.generate(texts, max_tokens, stop)
                    for i, r in zip(idx, rest):
                        out[i]["text"] = r
            else:
                for i, r in zip(idx, self.backend.generate(texts, max_tokens, stop)):
                    out[i] = {"text": r, "top": None}
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/v1/models"):
            return JSONResponse({"object": "list", "data": [{"id": self.model_name, "object": "model"}]})
        if not request.url.path.rstrip("/").endswith("/v1/completions"):
            return JSONResponse({"error": {"message": f"no route {request.url.path}"}}, status_code=404)
        try:
            body = await request.json()
            prompts = body["prompt"]
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            max_tokens = int(body.get("max_tokens", 16))
            logprobs = int(body.get("logprobs") or 0)
            stop = body.get("stop")
            stop = stop[0] if isinstance(stop, list) and stop else stop
            if float(body.get("temperature", 0)) != 0:
                raise ValueError("this server decodes greedily only: temperature must be 0")
            if not 0 <= logprobs <= 20 or max_tokens < 1:
                raise ValueError("logprobs must be in [0, 20] and max_tokens >= 1")
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse({"error": {"message": f"bad request: {e}"}}, status_code=400)
        res = await asyncio.gather(*[self._complete((p, max_tokens, logprobs, stop)) for p in prompts])
        choices = [{"index": i, "text": r["text"], "finish_reason": "length",
                    "logprobs": {"top_logprobs": [r["top"]]} if r["top"] is not None else None}
                   for i, r in enumerate(res)]
        return JSONResponse({"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                             "model": self.model_name, "choices": choices})


def start_judge_server(path: str, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                       num_cpus: float = 1.0) -> str:
    """Deploy the judge on Ray Serve (Ray must be initialized) and return its base URL."""
    serve.start(http_options={"host": host, "port": port})
    app = JudgeServer.options(ray_actor_options={"num_cpus": num_cpus}).bind(path, model_name, max(1, int(num_cpus)))
    serve.run(app, name="judge", route_prefix="/")
    return f"http://{host}:{port}"


def stop_judge_server() -> None:
    serve.delete("judge")
    serve.shutdown()
