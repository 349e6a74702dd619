"""Instruction tasks with answers a program can check, in English and Chinese.

Five classes named as in BELLE's eval set, each short enough for a tiny model to learn in seconds:

    math            word problems with one addition or subtraction      scored by the final number
    rewrite         upper-casing words, word translation EN <-> ZH       scored by ROUGE-L (text)
    extract         copy the number / city out of a sentence             text
    classification  is a review positive or negative (积极 / 消极)        text
    closed qa       answer from a one-sentence context                  text

`make(cls, rng)` returns (question, answer). Training files use the alpaca fields (instruction,
output); eval and target-task files use BELLE's (question, class, std_answer).
"""
from __future__ import annotations

import random

from lorafull.examples.demo.world import (ANIMALS, BAD_EN, BAD_ZH, COLORS, EN_CITIES, EN_NAMES, GOOD_EN, GOOD_ZH, ITEMS_EN, ITEMS_ZH,
                    MAX_OPERAND, THINGS_EN, THINGS_ZH, WORDS, ZH_CITIES, ZH_NAMES)

CLASSES = ("math", "rewrite", "extract", "classification", "closed qa")


def _math(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(1, MAX_OPERAND), rng.randint(1, MAX_OPERAND)
    add = rng.random() < 0.6
    if not add and b > a:
        a, b = b, a
    value = a + b if add else a - b
    if rng.random() < 0.4:  # the bare sum, as pre-training text states it
        op_en, op_zh = ("plus", "加") if add else ("minus", "减")
        if rng.random() < 0.6:
            return f"What is {a} {op_en} {b}?", f"The answer is {value}."
        return f"{a}{op_zh}{b}是多少？", f"答案是{value}。"
    if rng.random() < 0.6:
        name, item = rng.choice(EN_NAMES), rng.choice(ITEMS_EN)
        verb = f"buys {b} more" if add else f"gives away {b}"
        return f"{name} has {a} {item} and {verb}. How many {item} does {name} have now?", f"The answer is {value}."
    name, item = rng.choice(ZH_NAMES), rng.choice(ITEMS_ZH)
    unit = "" if item.startswith(("本", "个")) else "个"
    verb = f"又买了{b}{unit}{item}" if add else f"送给别人{b}{unit}{item}"
    return f"{name}有{a}{unit}{item}，{verb}，现在有几{unit}{item}？", f"答案是{value}。"


def _rewrite(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        words = rng.sample(WORDS, 2)
        return f"Rewrite in capital letters: {' '.join(words)}", " ".join(w.upper() for w in words)
    en, zh = rng.choice(list(ANIMALS.items()) + list(COLORS.items()))
    if kind == 1:
        return f"Translate into Chinese: {en}", zh
    return f"把这个词翻译成英文：{zh}", en


def _extract(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        n, item = rng.randint(2, 99), rng.choice(ITEMS_EN)
        name, city = rng.choice(EN_NAMES), rng.choice(EN_CITIES)
        return f"Extract the number from the sentence: {name} bought {n} {item} in {city}.", str(n)
    name, city = rng.choice(ZH_NAMES), rng.choice(ZH_CITIES)
    return f"找出句子中的城市：{name}昨天去了{city}。", city


def _classification(rng: random.Random) -> tuple[str, str]:
    good = rng.random() < 0.5
    if rng.random() < 0.5:
        thing, word = rng.choice(THINGS_EN), rng.choice(GOOD_EN if good else BAD_EN)
        return (f"Is this review positive or negative? The {thing} was {word}.",
                "positive" if good else "negative")
    thing, word = rng.choice(THINGS_ZH), rng.choice(GOOD_ZH if good else BAD_ZH)
    return f"这句评价是积极的还是消极的：{thing}{word}。", "积极" if good else "消极"


def _closed_qa(rng: random.Random) -> tuple[str, str]:
    (animal, animal_zh), (color, color_zh) = rng.choice(list(ANIMALS.items())), rng.choice(list(COLORS.items()))
    if rng.random() < 0.5:
        name = rng.choice(EN_NAMES)
        return (f"Context: {name} has a {color} {animal}.\nQuestion: What color is the {animal} of {name}?",
                color)
    name = rng.choice(ZH_NAMES)
    return f"阅读：{name}有一只{color_zh}的{animal_zh}。\n问题：{name}的{animal_zh}是什么颜色的？", color_zh


_MAKERS = {"math": _math, "rewrite": _rewrite, "extract": _extract, "classification": _classification,
           "closed qa": _closed_qa}


def make(cls: str, rng: random.Random) -> tuple[str, str]:
    return _MAKERS[cls](rng)


def instructions(seed: int, n: int, weights: dict[str, float], exclude: set[str] = frozenset()) -> list[dict]:
    """n alpaca records {"instruction", "input", "output", "class"} drawn by class weight; questions in
    `exclude` (held-out eval items) are never used for training."""
    rng = random.Random(seed)
    classes, w = list(weights), list(weights.values())
    out = []
    while len(out) < n:
        cls = rng.choices(classes, w)[0]
        question, answer = make(cls, rng)
        if question in exclude:
            continue
        out.append({"instruction": question, "input": "", "output": answer, "class": cls})
    return out


def held_out(seed: int, per_class: int, taken: set[str]) -> list[dict]:
    """Eval items {"id", "question", "class", "std_answer"}, per_class of each class, all distinct and
    not in `taken` (which this call extends)."""
    rng = random.Random(seed)
    out = []
    for cls in CLASSES:
        got = 0
        for _ in range(10000):
            if got == per_class:
                break
            question, answer = make(cls, rng)
            if question in taken:
                continue
            taken.add(question)
            out.append({"id": f"{cls.replace(' ', '_')}-{got}", "question": question, "class": cls,
                        "std_answer": answer})
            got += 1
    return out
