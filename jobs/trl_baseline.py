"""External baseline: RLHF throughput of TRL's own trainers (RLOOTrainer / GRPOTrainer) on CPU.

``trl_samples_per_s`` trains the policy in ``policy_dir`` for ``steps`` optimizer steps, each on
``prompts_per_step`` prompts x ``responses_per_prompt`` sampled completions, KL-penalised (``beta``)
towards a frozen reference copy, rewarded by the sequence-classification RM in ``reward_dir``.
It returns completions generated-and-trained-on per second, measured by a ``TrainerCallback``
from the end of step 1 (warm-up, excluded) to the end of the last step; trainer construction
(model/ref/RM loading) is not timed.

Task format: the prompt string handed to TRL is ``"[BOS] prompt [SEP]"``; the word-level
tokenizer matches the special-token strings as added tokens, so TRL's plain-text path tokenizes
it to exactly ``orchestrator.nn.models.encode_prompt``. TRL's built-in RM path would score
``prompt + decoded_completion`` with ``skip_special_tokens`` (dropping the ``[EOS]`` the RM was
trained to see), so the RM is wrapped as a reward function that scores the exact ids
``[BOS] prompt [SEP] completion_ids`` (generated ``[EOS]`` kept), same cost: one RM forward per batch.

    python -m jobs.trl_baseline [rloo|grpo]   # 6 steps on the bench inputs of `jobs.bench rl`, prints JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.trl_baseline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("algorithm", nargs="?", default="rloo", choices=["rloo", "grpo"])
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps (the first is warm-up)")
    args = ap.parse_args(argv)

    for k, v in {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    from orchestrator.run.bench import _bench_inputs
    from orchestrator.run.trl_baseline import trl_samples_per_s

    with contextlib.redirect_stdout(sys.stderr):  # transformers/deepspeed print banners to stdout on import
        _, _, sft, rm_dir, train_rows, _ = _bench_inputs(Path("runs/bench-rl"), 0, "2x128", 300)
        res = trl_samples_per_s(str(sft.dir / "policy"), str(rm_dir), train_rows["prompt"],
                                algorithm=args.algorithm, steps=args.steps)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
