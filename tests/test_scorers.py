"""Offline scorers: math final numbers, ROUGE-L, code run against its tests (time and memory limits;
isolation itself is tested in test_sandbox.py)."""
from __future__ import annotations

import random

import pytest

from lorafull.judge.scorers import extract_code, lcs_length, run_code, score, text_tokens


@pytest.mark.parametrize("response, reference, expected", [
    ("一共有8个苹果。", "答案是 8.0", 1.0),
    ("The answer is 1,250 dollars.", "1250", 1.0),
    ("所以答案为3/4", "0.75", 1.0),
    ("\\boxed{\\frac{3}{4}}", "3/4", 1.0),
    ("x = 290吨。", "因此，生产58吨化肥需要290吨水。", 1.0),
    ("答案是7，不是8", "8", 0.0),
    ("我不知道", "8", 0.0),
    ("8", "这道题没有数字答案", None),
    ("１２", "12", 1.0),  # full-width digits
])
def test_math_final_number(response, reference, expected):
    assert score("math", response, reference) == expected


def _lcs_table(a, b):
    m = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            m[i + 1][j + 1] = m[i][j] + 1 if x == y else max(m[i][j + 1], m[i + 1][j])
    return m[-1][-1]


def test_bit_parallel_lcs_equals_the_table():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l_characters_for_chinese_words_for_english():
    assert text_tokens("我喜欢猫, I like cats!") == ["我", "喜", "欢", "猫", "i", "like", "cats"]
    assert score("text", "the cat sat on the mat", "the cat is on the mat") == pytest.approx(2 * (5 / 6) * (5 / 6) / (10 / 6))
    assert score("text", "我喜欢猫", "我喜欢狗") == pytest.approx(0.75)
    assert score("text", "", "ref") == 0.0 and score("text", "x", "") is None


def test_code_passes_and_fails_on_its_tests():
    answer = "Here you go:\n```python\ndef square(x):\n    return x * x\n```\nUsage: `square(3)`"
    tests = "```python\nassert square(3) == 9\nassert square(-2) == 4\n```"
    assert extract_code(answer).startswith("def square")
    assert score("code", answer, tests) == 1.0
    assert score("code", answer.replace("x * x", "x + x"), tests) == 0.0
    assert score("code", answer, "代码如下：请自行测试。这不是测试。") is None  # prose reference: no test


def test_code_infinite_loop_times_out():
    result = run_code("while True:\n    pass\n", timeout_s=2.0)
    assert result.timed_out and not result.passed
    assert score("code", "```python\nwhile True: pass\n```", "assert True", timeout_s=2.0) == 0.0


def test_code_memory_is_limited():
    result = run_code("x = bytearray(2 * 1024 ** 3)\n", mem_mb=512)
    assert not result.passed and "MemoryError" in result.stderr
