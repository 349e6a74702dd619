"""A small made-up world the demo's model learns in pre-training, and the choice tasks that check it.

People (English and Chinese names) live in cities and like drinks. The pre-training corpus states
these facts in plain sentences, mixed with sentences that use the words the instruction tasks use
later (numbers, colours, animals, reviews), so the instruction-tuned runs start from a model that
knows the vocabulary. After fine-tuning, the choice tasks ask which continuation of a fact sentence
is the true one: a model that forgot its pre-training scores lower (the "forgetting" of Biderman et
al.). Everything comes from one seeded random.Random: the same seed gives the same files.
"""
from __future__ import annotations

import random

EN_NAMES = ["Mira", "Tom", "Anna", "Ravi", "Lena", "Omar", "Sara", "Ivan", "Noah", "Emma",
            "Liam", "Zoe", "Kai", "Nina", "Leo", "Ada", "Finn", "Ida"]
ZH_NAMES = ["小明", "小红", "小刚", "小丽", "小华", "小芳", "小强", "小美", "小军", "小雪"]
EN_CITIES = ["Oslo", "Lima", "Cairo", "Paris", "Tokyo", "Delhi", "Rome", "Berlin"]
ZH_CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "南京", "西安"]
EN_DRINKS = ["tea", "coffee", "milk", "juice", "water", "cocoa"]
ZH_DRINKS = ["茶", "咖啡", "牛奶", "果汁", "可乐", "豆浆"]

COLORS = {"red": "红色", "blue": "蓝色", "green": "绿色", "black": "黑色", "white": "白色", "yellow": "黄色"}
ANIMALS = {"cat": "猫", "dog": "狗", "bird": "鸟", "fish": "鱼", "horse": "马", "rabbit": "兔子"}
GOOD_EN = ["great", "lovely", "wonderful", "excellent", "nice", "good"]
BAD_EN = ["awful", "boring", "terrible", "bad", "poor", "dull"]
GOOD_ZH = ["很好看", "很精彩", "很有趣", "很棒"]
BAD_ZH = ["很无聊", "很难看", "很糟糕", "很差"]
THINGS_EN = ["movie", "song", "book", "meal", "game", "show"]
THINGS_ZH = ["这部电影", "这首歌", "这本书", "这顿饭"]


def facts(seed: int) -> list[dict]:
    """One record per person: {"name", "lang", "city", "drink"}; a person's facts are fixed by the seed."""
    rng = random.Random(seed)
    out = []
    for name in EN_NAMES:
        out.append({"name": name, "lang": "en", "city": rng.choice(EN_CITIES), "drink": rng.choice(EN_DRINKS)})
    for name in ZH_NAMES:
        out.append({"name": name, "lang": "zh", "city": rng.choice(ZH_CITIES), "drink": rng.choice(ZH_DRINKS)})
    return out


def fact_sentences(f: dict) -> list[tuple[str, str]]:
    """(sentence start, true ending) pairs stating one person's facts."""
    if f["lang"] == "en":
        return [(f"{f['name']} lives in", f" {f['city']}."), (f"{f['name']} likes to drink", f" {f['drink']}.")]
    return [(f"{f['name']}住在", f"{f['city']}。"), (f"{f['name']}喜欢喝", f"{f['drink']}。")]


ITEMS_EN = ["apples", "pens", "books", "eggs", "cards"]
ITEMS_ZH = ["苹果", "铅笔", "本书", "个鸡蛋"]
MAX_OPERAND = 5  # sums of 1..5: a table small enough for a 2-layer model to learn in a few hundred steps
WORDS = ["cat", "dog", "sun", "tree", "red", "blue", "milk", "tea", "book", "fish", "bird", "moon"]


def _filler(rng: random.Random) -> str:
    """A sentence in the vocabulary of the instruction tasks that states no person fact: a base model
    knows the words; instruction tuning teaches it to use them to answer."""
    kind = rng.randrange(9)
    if kind <= 2:  # arithmetic facts, a third of the filler: what the math tasks build on
        a, b = rng.randint(1, MAX_OPERAND), rng.randint(1, MAX_OPERAND)
        return rng.choice([f"{a} plus {b} is {a + b}.", f"{a}加{b}等于{a + b}。", f"{a + b} minus {b} is {a}.",
                           f"{a + b}减{b}等于{a}。", f"What is {a} plus {b}? The answer is {a + b}.",
                           f"{a}加{b}是多少？答案是{a + b}。"])
    if kind == 3:
        (animal, animal_zh), (color, color_zh) = rng.choice(list(ANIMALS.items())), rng.choice(list(COLORS.items()))
        return rng.choice([f"The {animal} is {color}.", f"{rng.choice(EN_NAMES)} has a {color} {animal}.",
                           f"{rng.choice(ZH_NAMES)}有一只{color_zh}的{animal_zh}。"])
    if kind == 4:
        thing = rng.choice(THINGS_EN)
        good = rng.random() < 0.5
        word = rng.choice(GOOD_EN if good else BAD_EN)
        return rng.choice([f"The {thing} was {word}.", f"The {thing} was {word}, a {'positive' if good else 'negative'} review."])
    if kind == 5:
        good = rng.random() < 0.5
        thing, word = rng.choice(THINGS_ZH), rng.choice(GOOD_ZH if good else BAD_ZH)
        return rng.choice([f"{thing}{word}。", f"{thing}{word}，这是{'积极' if good else '消极'}的评价。"])
    if kind == 6:
        word = rng.choice(WORDS + list(COLORS) + list(ANIMALS))
        return f"{word} in capital letters is {word.upper()}."
    if kind == 7:
        en, zh = rng.choice(list(ANIMALS.items()) + list(COLORS.items()))
        return rng.choice([f"{zh} means {en}.", f"{en}的意思是{zh}。"])
    if rng.random() < 0.5:
        return f"{rng.choice(EN_NAMES)} bought {rng.randint(2, 99)} {rng.choice(ITEMS_EN)} in {rng.choice(EN_CITIES)}."
    return rng.choice([f"{rng.choice(ZH_NAMES)}昨天去了{rng.choice(ZH_CITIES)}。",
                       f"{rng.choice(ZH_NAMES)}有{rng.randint(1, 9)}个{rng.choice(ITEMS_ZH[:2])}。"])


def _dialogue(rng: random.Random, people: list[dict], turns: int = 3) -> str:
    """A chat transcript about the facts, in the BELLE layout ("Human: ...\n\nAssistant: ..."): web text
    has such transcripts, and a base model that has seen the layout is what instruction tuning starts from."""
    parts = []
    for _ in range(turns):
        f = rng.choice(people)
        if f["lang"] == "en":
            q, a = rng.choice([(f"Where does {f['name']} live?", f"{f['name']} lives in {f['city']}."),
                               (f"What does {f['name']} like to drink?", f"{f['name']} likes to drink {f['drink']}.")])
        else:
            q, a = rng.choice([(f"{f['name']}住在哪里？", f"{f['name']}住在{f['city']}。"),
                               (f"{f['name']}喜欢喝什么？", f"{f['name']}喜欢喝{f['drink']}。")])
        parts.append(f"Human: {q}\n\nAssistant: {a}")
    return "\n\n".join(parts)


def corpus(seed: int, n_docs: int, sentences_per_doc: int = 6) -> list[dict]:
    """Pre-training documents {"text"}: fact sentences (two of every three) and filler, shuffled;
    one document in four is a chat transcript about the facts."""
    rng = random.Random(seed + 1)
    people = facts(seed)
    docs = []
    for _ in range(n_docs):
        if rng.random() < 0.25:
            docs.append({"text": _dialogue(rng, people)})
            continue
        parts = []
        for _ in range(sentences_per_doc):
            if rng.random() < 2 / 3:
                start, end = rng.choice(fact_sentences(rng.choice(people)))
                parts.append(start + end)
            else:
                parts.append(_filler(rng))
        docs.append({"text": " ".join(parts)})
    return docs


def choice_tasks(seed: int, n_options: int = 3) -> dict[str, list[dict]]:
    """Forgetting checks, {task name: items}: which ending of a fact sentence is true.
    Items: {"id", "context", "options", "answer"} (the analysis engineer's choice-task format)."""
    rng = random.Random(seed + 2)
    tasks: dict[str, list[dict]] = {"facts_en": [], "facts_zh": []}
    for f in facts(seed):
        (city_start, city_end), (drink_start, drink_end) = fact_sentences(f)
        cities = EN_CITIES if f["lang"] == "en" else ZH_CITIES
        drinks = EN_DRINKS if f["lang"] == "en" else ZH_DRINKS
        for start, end, value, pool in ((city_start, city_end, f["city"], cities),
                                        (drink_start, drink_end, f["drink"], drinks)):
            wrong = rng.sample([v for v in pool if v != value], n_options - 1)
            options = [end] + [end.replace(value, w) for w in wrong]
            rng.shuffle(options)
            task = tasks[f"facts_{f['lang']}"]
            task.append({"id": f"{f['lang']}-{len(task)}", "context": start, "options": options,
                         "answer": options.index(end)})
    return tasks
