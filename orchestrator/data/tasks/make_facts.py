"""Regenerate ``facts.json``, the invented fact table of the synthetic assistant task.

The table ships in the repository (so the task never changes under a user); this script documents
how it was made: ``python -m orchestrator.data.tasks.make_facts > orchestrator/data/tasks/facts.json``.
Names are invented from syllables so no pretrained knowledge could help a model.
"""

from __future__ import annotations

import json
import random

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl",
          "kr", "pl", "st", "tr", "zh", "th", "sk"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "eo", "ou", "ia"]
CODAS = ["", "n", "r", "l", "th", "sk", "m", "x", "nd"]
ANIMAL_CLASSES = ["bird", "fish", "mammal", "reptile", "insect", "amphibian"]


def _names(rng: random.Random, n: int, syllables: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables - 1))
        name += rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def make_facts(seed: int = 20221019, countries: int = 120, unknown: int = 40, animals: int = 80) -> dict:
    rng = random.Random(seed)
    taken: set[str] = set()
    country = _names(rng, countries + unknown, 3, taken)
    capital = _names(rng, countries, 2, taken)
    beast = _names(rng, animals, 2, taken)
    return {
        "version": 1,
        "capitals": dict(zip(country[:countries], capital)),
        "unknown_countries": country[countries:],
        "animals": {b: ANIMAL_CLASSES[i % len(ANIMAL_CLASSES)] for i, b in enumerate(beast)},
    }


if __name__ == "__main__":
    print(json.dumps(make_facts(), indent=1, sort_keys=True))
