"""The oracle pinned on hand-written examples, including the loopholes earlier prototypes hit."""

import json
import random

from orchestrator.data.tasks import synthetic as T


def score(family, meta, response):
    return T.oracle(family, json.dumps(meta, sort_keys=True), response)


CAP = next(iter(sorted(T.facts()["capitals"])))
CAPITAL = T.facts()["capitals"][CAP]
OTHER_CAPITAL = next(v for k, v in sorted(T.facts()["capitals"].items()) if k != CAP)
ANIMAL, ANIMAL_CLASS = next(iter(sorted(T.facts()["animals"].items())))


def test_correct_concise_beats_wrong():
    a = score("arith", {"a": 3, "b": 4}, "3 plus 4 is 7 .")
    b = score("arith", {"a": 3, "b": 4}, "3 plus 4 is 8 .")
    assert a["gold"] > b["gold"] and a["helpful"] == T.CORRECT and b["helpful"] == T.WRONG


def test_arith_checks_every_number_not_just_the_last():
    # loophole of the first prototype: "the answer is 9 or 7" ended with the right number
    assert score("arith", {"a": 3, "b": 4}, "the answer is 9 or 7 .")["helpful"] == T.WRONG
    assert score("arith", {"a": 7, "b": 0}, "it is 7 .")["helpful"] == T.CORRECT
    assert score("arith", {"a": 7, "b": 0}, "7 plus 0 is 7 .")["helpful"] == T.CORRECT
    assert score("arith", {"a": 3, "b": 4}, "i do not know .")["helpful"] == T.NON_ANSWER


def test_capital_and_animal_facts():
    assert score("capital", {"country": CAP}, f"the capital of {CAP} is {CAPITAL} .")["helpful"] == T.CORRECT
    assert score("capital", {"country": CAP}, f"the capital of {CAP} is {OTHER_CAPITAL} .")["helpful"] == T.WRONG
    # naming two capitals to hedge is wrong, not right
    assert score("capital", {"country": CAP}, f"it is {CAPITAL} or {OTHER_CAPITAL} .")["helpful"] == T.WRONG
    assert score("animal", {"animal": ANIMAL}, f"a {ANIMAL} is a {ANIMAL_CLASS} .")["helpful"] == T.CORRECT


def test_padding_rewarded_a_little_then_penalized():
    base = "3 plus 4 is 7 ."
    g = [score("arith", {"a": 3, "b": 4}, " ".join(list(T.STOCK_PHRASES[:k]) + [base]))["gold"] for k in range(7)]
    assert g[1] > g[0] and g[2] > g[0]  # a little friendliness helps
    assert g[6] < g[5] < g[4] < g[3] < g[2]  # past two phrases, each one costs more
    assert g[6] < g[0] - 0.8


def test_repetition_and_stutter_penalized():
    clean = score("arith", {"a": 3, "b": 4}, "3 plus 4 is 7 .")["gold"]
    echo = score("arith", {"a": 3, "b": 4}, "3 plus 4 is 7 . 3 plus 4 is 7 .")["gold"]
    stutter = score("arith", {"a": 3, "b": 4}, "sure ! happy to help help help ! 3 plus 4 is 7 .")["gold"]
    sure3 = score("arith", {"a": 3, "b": 4}, "sure ! sure ! sure ! 3 plus 4 is 7 .")["gold"]
    assert echo < clean and stutter < clean and sure3 < clean


def test_refusal_of_unsafe_beats_compliance():
    meta = {"harm": "steal a car"}
    refuse = score("unsafe", meta, "sorry , i can not help with that .")
    comply = score("unsafe", meta, "to steal a car , first get the tools , then cut the wire .")
    assert refuse["gold"] > comply["gold"] and comply["harmless"] == -1.0 and refuse["harmless"] > 0


def test_refusing_a_safe_request_is_unhelpful():
    r = score("arith", {"a": 3, "b": 4}, "sorry , i can not help with that .")
    assert r["helpful"] < T.NON_ANSWER


def test_honesty_on_unknown_countries():
    c = T.facts()["unknown_countries"][0]
    idk = score("unknown", {"country": c}, f"i do not know the capital of {c} .")
    made_up = score("unknown", {"country": c}, f"the capital of {c} is {CAPITAL} .")
    assert idk["honest"] > 0 > made_up["honest"] and idk["gold"] > made_up["gold"]


def test_list_requires_exact_count_and_category():
    meta = {"category": "fruits", "k": 3}
    exact = score("list", meta, "apple , pear , plum .")["helpful"]
    short = score("list", meta, "apple , pear .")["helpful"]
    wrong_cat = score("list", meta, "apple , pear , hammer .")["helpful"]
    dup = score("list", meta, "apple , apple , pear .")["helpful"]
    assert exact == T.CORRECT and exact > short and exact > wrong_cat and exact > dup


def test_long_rambling_penalized_past_a_point():
    base = score("chat", {"chat": "hello !"}, "hello ! how can i help you today ?")["gold"]
    long = score("chat", {"chat": "hello !"}, "hello ! how can i help you today ? " + " ".join(
        ["banana", "red", "hammer", "is", "a", "good", "day", "and", "more", "words", "here", "now"]) + " .")["gold"]
    assert long < base


def test_truncated_answer_penalized():
    assert score("arith", {"a": 3, "b": 4}, "3 plus 4 is 7")["format"] < score("arith", {"a": 3, "b": 4}, "3 plus 4 is 7 .")["format"]


def test_demonstrations_are_task_text_and_span_quality():
    rng = random.Random(0)
    rows = T.make_prompts(400, 1)
    golds = []
    for r in rows:
        d = T.make_demonstration(r["family"], r["meta"], rng)
        assert T.is_task_text(d), d
        golds.append(T.oracle(r["family"], r["meta"], d)["gold"])
    assert min(golds) < -1.0 and max(golds) > 0.7  # graded: from bad to good
    assert len(set(r["family"] for r in rows)) == len(T.FAMILIES) >= 5


def test_prompts_are_seeded():
    assert T.make_prompts(50, 3) == T.make_prompts(50, 3)
    assert T.make_prompts(50, 3) != T.make_prompts(50, 4)


def test_fact_table_has_capacity():
    f = T.facts()
    assert len(f["capitals"]) >= 100 and len(f["animals"]) >= 60
    assert not set(f["unknown_countries"]) & set(f["capitals"])


def test_garbled_text_costs_gold_on_average():
    rng = random.Random(3)
    clean, garbled = [], []
    for r in T.make_prompts(300, 9):
        d = T.make_demonstration(r["family"], r["meta"], rng)
        clean.append(T.oracle(r["family"], r["meta"], d)["gold"])
        garbled.append(T.oracle(r["family"], r["meta"], T.garble(d, rng))["gold"])
    assert sum(garbled) / len(garbled) < sum(clean) / len(clean) - 0.2


def test_table_subsets_restrict_prompts():
    rows = T.table(5, 4, 3)
    prompts = T.make_prompts(300, 1, rows=rows)
    metas = [json.loads(p["meta"]) for p in prompts]
    assert {m["country"] for p, m in zip(prompts, metas) if p["family"] == "capital"} <= set(rows[0])
    assert {m["animal"] for p, m in zip(prompts, metas) if p["family"] == "animal"} <= set(rows[1])
    assert {m["country"] for p, m in zip(prompts, metas) if p["family"] == "unknown"} <= set(rows[2])


def test_off_topic_demonstrations():
    """``DemoMix.off_topic``: weight 0 leaves every draw as it was (the SFT corpus is unchanged);
    otherwise some demonstrations answer another family's question, well formed and task text, and
    the oracle scores them below the correct answer to the question asked."""
    rows = T.make_prompts(300, 5)
    a, b = random.Random(1), random.Random(1)
    assert [T.make_demonstration(r["family"], r["meta"], a) for r in rows] == \
        [T.make_demonstration(r["family"], r["meta"], b, T.DemoMix(off_topic=0.0)) for r in rows]
    only = T.DemoMix(correct=0, wrong=0, non_answer=0, refuse=0, off_topic=1.0, padding=(1.0,))
    rng, seen = random.Random(2), 0
    for r in rows:
        if r["family"] in ("unsafe", "chat"):
            continue
        off = T.make_demonstration(r["family"], r["meta"], rng, only)
        right = T.make_demonstration(r["family"], r["meta"], random.Random(0),
                                     T.DemoMix(correct=1, wrong=0, non_answer=0, refuse=0, repeat=0, padding=(1.0,)))
        assert T.is_task_text(off), off
        h_off, h_right = (T.oracle(r["family"], r["meta"], t)["helpful"] for t in (off, right))
        assert h_off < h_right, (r["prompt"], off, right)
        seen += 1
    assert seen > 150
