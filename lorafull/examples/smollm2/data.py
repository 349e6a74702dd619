"""The SmolLM2 miniature's data, written by this project (deterministic, offline).

Learning -- a new skill: translating three-word English phrases into Glorp, a made-up language with
a fixed word list (colour, animal, verb: "red cat sleeps" -> "vek miro sunda"). The base model has
never seen Glorp; a run that learned the word list answers held-out phrases (combinations it was not
trained on). Scored by ROUGE-L against the Glorp phrase, so each right word earns partial credit.

Forgetting -- what the base model already knew, in two forms:
- facts_numeric: short-answer questions whose answer is one number ("How many legs does a spider
  have?" -> 8), generated greedily and scored by the final number in the answer;
- facts_choice: general-knowledge sentences with three endings, scored by the log-likelihood of each.
Only items the untuned SmolLM2-135M-Instruct gets right are kept (checked once by running it, greedy,
fp32, on a CPU), so the base scores 1.0 and every point lost is forgetting.
"""
from __future__ import annotations

import itertools
import random

COLORS = {"red": "vek", "blue": "tolu", "green": "mave", "black": "dorn", "white": "pilo", "yellow": "snat"}
ANIMALS = {"cat": "miro", "dog": "garv", "bird": "fesh", "fish": "lunt", "horse": "brak", "rabbit": "zept"}
VERBS = {"sleeps": "sunda", "runs": "kelo", "eats": "nimo", "jumps": "hapsa", "sings": "tirru", "swims": "ovel"}
PROMPTS = ("Translate into Glorp: {}", "Say this in Glorp: {}", "What is \"{}\" in Glorp?")


def phrases() -> list[tuple[str, str]]:
    """Every (English, Glorp) phrase: 6 x 6 x 6 = 216."""
    return [(f"{c} {a} {v}", f"{COLORS[c]} {ANIMALS[a]} {VERBS[v]}")
            for c, a, v in itertools.product(COLORS, ANIMALS, VERBS)]


def skill_split(seed: int, n_eval: int, n_target: int) -> tuple[list, list, list]:
    """(train phrases, eval phrases, target-task phrases): disjoint, shuffled by seed."""
    all_phrases = phrases()
    random.Random(seed).shuffle(all_phrases)
    return all_phrases[n_eval + n_target:], all_phrases[:n_eval], all_phrases[n_eval:n_eval + n_target]


def instructions(train: list[tuple[str, str]], n: int, seed: int) -> list[dict]:
    """n alpaca records drawn from the training phrases, in varied wordings."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        en, glorp = rng.choice(train)
        out.append({"instruction": rng.choice(PROMPTS).format(en), "input": "", "output": glorp, "class": "glorp"})
    return out


def held_out(items: list[tuple[str, str]], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "question": PROMPTS[0].format(en), "class": "glorp", "std_answer": glorp}
            for i, (en, glorp) in enumerate(items)]


# (question, number): the base model's greedy answer ends with this number (of 28 written, these 11 passed)
NUMERIC_FACTS = [
    ("How many days are there in a week?", "7"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a hexagon have?", "6"),
    ("How many months are there in a year?", "12"),
    ("How many hours are there in a day?", "24"),
    ("What is 2 + 2?", "4"),
    ("How many centimeters are in a meter?", "100"),
    ("How many seconds are in a minute?", "60"),
    ("How many years are in a century?", "100"),
    ("How many days are in the month of April?", "30"),
    ("How many eyes do humans have?", "2"),
]

# (context, true ending, two wrong endings): the base model ranks the true ending first (33 of 36 written)
CHOICE_FACTS = [
    ("The capital of France is", "Paris", "Berlin", "Madrid"),
    ("The capital of Japan is", "Tokyo", "Beijing", "Seoul"),
    ("The capital of Italy is", "Rome", "Athens", "Vienna"),
    ("The capital of Germany is", "Berlin", "Paris", "Warsaw"),
    ("The capital of the United Kingdom is", "London", "Dublin", "Paris"),
    ("The capital of Spain is", "Madrid", "Lisbon", "Rome"),
    ("The capital of Russia is", "Moscow", "Kiev", "Warsaw"),
    ("The capital of China is", "Beijing", "Tokyo", "Bangkok"),
    ("The capital of Egypt is", "Cairo", "Nairobi", "Tunis"),
    ("The largest ocean on Earth is the", "Pacific Ocean", "Arctic Ocean", "Indian Ocean"),
    ("The planet closest to the Sun is", "Mercury", "Neptune", "Jupiter"),
    ("The largest planet in our solar system is", "Jupiter", "Mercury", "Mars"),
    ("The Red Planet is", "Mars", "Venus", "Saturn"),
    ("Water is made of hydrogen and", "oxygen", "iron", "gold"),
    ("The chemical symbol for gold is", "Au", "Ag", "Fe"),
    ("The freezing point of water in Celsius is", "0 degrees", "50 degrees", "90 degrees"),
    ("Romeo and Juliet was written by", "William Shakespeare", "Charles Dickens", "Mark Twain"),
    ("The theory of relativity was developed by", "Albert Einstein", "Isaac Newton", "Charles Darwin"),
    ("The Mona Lisa was painted by", "Leonardo da Vinci", "Pablo Picasso", "Vincent van Gogh"),
    ("The tallest mountain in the world is", "Mount Everest", "Mount Fuji", "Mont Blanc"),
    ("The longest river in Africa is the", "Nile", "Amazon", "Thames"),
    ("Plants make their food through", "photosynthesis", "digestion", "respiration"),
    ("The opposite of hot is", "cold", "warm", "big"),
    ("The color of a clear sky on a sunny day is", "blue", "green", "red"),
    ("A baby cat is called a", "kitten", "puppy", "calf"),
    ("Bees make", "honey", "milk", "silk"),
    ("The Sun rises in the", "east", "west", "north"),
    ("Ice is the solid form of", "water", "air", "salt"),
    ("The primary language spoken in Brazil is", "Portuguese", "Spanish", "French"),
    ("The currency of the United States is the", "dollar", "euro", "yen"),
    ("The human heart pumps", "blood", "air", "water"),
    ("An octagon has", "eight sides", "five sides", "three sides"),
    ("Penguins live mostly in the", "Southern Hemisphere", "Sahara Desert", "Arctic Circle"),
]


def numeric_task(facts=NUMERIC_FACTS) -> list[dict]:
    return [{"id": f"num-{i}", "question": q, "class": "facts", "std_answer": a} for i, (q, a) in enumerate(facts)]


def choice_task(seed: int, facts=CHOICE_FACTS) -> list[dict]:
    """{"id", "context", "options", "answer"} per fact; options start with a space (they continue the context)."""
    rng = random.Random(seed)
    out = []
    for i, (context, true, *wrong) in enumerate(facts):
        options = [f" {true}."] + [f" {w}." for w in wrong]
        rng.shuffle(options)
        out.append({"id": f"choice-{i}", "context": context, "options": options, "answer": options.index(f" {true}.")})
    return out
