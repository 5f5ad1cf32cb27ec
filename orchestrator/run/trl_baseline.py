"""External baseline: RLHF throughput of TRL's own trainers (RLOOTrainer / GRPOTrainer), on the CPU
(``jobs.bench rl``) or a GPU (``jobs.bench gpu``, ``device="cuda"``, ``bf16``).

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

The command line is ``jobs/trl_baseline.py``.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import torch


def _rm_reward(reward_dir: str, tok, device: str = "cpu", bf16: bool = False):
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1).eval()
    rm.to(device, torch.bfloat16 if bf16 else torch.float32)
    rm.config.pad_token_id = tok.pad_token_id

    def reward_model(prompts, completions, completion_ids, **_):
        seqs = [tok(p, add_special_tokens=False)["input_ids"] + list(c) for p, c in zip(prompts, completion_ids)]
        t = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), t), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
        with torch.inference_mode():
            return rm(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().tolist()

    return reward_model


def trl_samples_per_s(policy_dir: str, reward_dir: str, prompts: list[str], algorithm: str = "rloo",
                      steps: int = 8, prompts_per_step: int = 16, responses_per_prompt: int = 2,
                      max_new_tokens: int = 16, beta: float = 0.05, lr: float = 1e-5, threads: int = 1,
                      seed: int = 0, workdir: str | None = None, device: str = "cpu", bf16: bool = False) -> dict:
    """Train with TRL's ``algorithm`` ("rloo" | "grpo") for ``steps`` steps; returns the measured rate.
    ``device``: cpu, or cuda (the trainer's own placement); ``bf16``: its mixed precision."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    if algorithm not in ("rloo", "grpo"):
        raise ValueError(f"algorithm must be 'rloo' or 'grpo', got {algorithm!r}")
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir)  # the reference copy is re-loaded from this path
    policy.config.pad_token_id = policy.generation_config.pad_token_id = tok.pad_token_id
    policy.generation_config.bos_token_id, policy.generation_config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    dataset = Dataset.from_dict({"prompt": [f"{tok.bos_token} {p} {tok.sep_token}" for p in prompts]})

    batch = prompts_per_step * responses_per_prompt  # completions per optimizer step
    Config, Trainer = ((trl.RLOOConfig, trl.RLOOTrainer) if algorithm == "rloo"
                       else (trl.GRPOConfig, trl.GRPOTrainer))
    tmp = workdir is None
    out = tempfile.mkdtemp(prefix="trl-baseline-") if tmp else workdir
    config = {
        "output_dir": out, "max_steps": steps, "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1, "steps_per_generation": 1, "num_generations": responses_per_prompt,
        "num_iterations": 1, "max_completion_length": max_new_tokens, "temperature": 1.0, "beta": beta,
        "learning_rate": lr, "use_cpu": device == "cpu", "bf16": bf16, "fp16": False, "gradient_checkpointing": False,
        "seed": seed, "data_seed": seed, "report_to": "none", "save_strategy": "no", "eval_strategy": "no",
        "logging_steps": 1, "disable_tqdm": True, "dataloader_num_workers": 0, "log_completions": False}
    args = Config(**config)

    class Clock(TrainerCallback):
        def __init__(self):
            self.begin, self.ends = None, []

        def on_train_begin(self, *a, **k):
            self.begin = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.ends.append(time.perf_counter())

    clock = Clock()
    trainer = Trainer(model=policy, reward_funcs=_rm_reward(reward_dir, tok, device, bf16), args=args, train_dataset=dataset,
                      processing_class=tok, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # keep stdout clean; metrics stay in trainer.state.log_history
    try:
        trainer.train()
    finally:
        if tmp:
            shutil.rmtree(out, ignore_errors=True)
    torch.set_num_threads(threads)
    timed = len(clock.ends) - 1
    if timed < 1:
        raise ValueError("need steps >= 2 (step 1 is warm-up and is not timed)")
    seconds = clock.ends[-1] - clock.ends[0]
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"samples_per_s": timed * batch / seconds, "steps": timed, "seconds": seconds,
            "trl_version": trl.__version__, "algorithm": algorithm,
            "warmup_step_s": clock.ends[0] - clock.begin, "completions_per_step": batch,
            "reward_first": logs[0]["reward"] if logs else None, "reward_last": logs[-1]["reward"] if logs else None,
            "mean_completion_len": (sum(h.get("completions/mean_length", 0) for h in logs) / len(logs)
                                    if logs else None),
            "config": {k: v for k, v in config.items() if k != "output_dir"}}

