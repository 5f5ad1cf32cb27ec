"""The RLAIF judge's constitution file: principles and few-shot examples (YAML), read and checked
while the config is validated (Bai et al. 2022, Constitutional AI; Lee et al. 2023, RLAIF)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONSTITUTION = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "constitution.yaml"


def load_constitution(path: str = "") -> tuple[list[dict], list[dict]]:
    """(principles, few-shot examples) from a constitution YAML (empty path: the packaged one).
    Principles are ``{name, text}``; examples ``{prompt, response_1, response_2, answer}`` with answer
    1 or 2. Raises ValueError naming what is wrong."""
    import yaml

    p = Path(path) if path else DEFAULT_CONSTITUTION
    if not p.is_file():
        raise ValueError(f"{p} does not exist")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML ({str(e).splitlines()[0]})") from None
    principles = doc.get("principles") if isinstance(doc, dict) else None
    if not isinstance(principles, list) or not principles or not all(
            isinstance(x, dict) and isinstance(x.get("name"), str) and isinstance(x.get("text"), str) for x in principles):
        raise ValueError(f"{p} needs a non-empty list 'principles' of {{name, text}}")
    shots = doc.get("few_shot") or []
    for i, ex in enumerate(shots):
        if not isinstance(ex, dict) or not {"prompt", "response_1", "response_2", "answer"} <= set(ex) \
                or str(ex["answer"]) not in ("1", "2"):
            raise ValueError(f"{p} few_shot[{i}] needs prompt, response_1, response_2 and answer 1 or 2")
    return principles, [{**ex, "answer": str(ex["answer"])} for ex in shots]
