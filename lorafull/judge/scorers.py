"""Offline scorers: a score in [0, 1] for a response against a reference, with no judge model.

    score("math", response, reference)   final number equal (1.0) or not (0.0); None if the reference has none
    score("code", response, reference)   the response's code + the reference's test code run in a sandboxed
                                         subprocess: passes (1.0) or not (0.0); None if the reference is not code
    score("text", response, reference)   ROUGE-L F1 (Chinese by character, other text by word)

Used by `judge.kind: reference` (class -> scorer through eval.judge.scorers) and by the analysis
generation tasks. Code answers run in lorafull.judge.sandbox (kernel namespaces and rlimits; its
docstring has the threat model); where no isolation is possible, code scoring refuses to run unless
judge.unsafe_code_execution is set.
"""
from __future__ import annotations

import ast
import re
import unicodedata
from fractions import Fraction
from typing import Optional

from lorafull.judge.sandbox import CodeResult, run_code  # noqa: F401 (CodeResult: re-exported)


SCORERS = ("math", "code", "text")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. 2021 from n samples of which c pass: 1 - C(n-c, k) / C(n, k),
    as a running product (no huge binomials)."""
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def samples_score(scorer: str, values: list[Optional[float]], k: int = 1) -> Optional[float]:
    """One item's score from its samples' scores: pass@k for the pass/fail scorers (math, code; an unscorable
    sample fails), the mean for text; None when no sample could be scored."""
    if all(v is None for v in values):
        return None
    if len(values) == 1:
        return values[0]
    if scorer in ("math", "code"):
        return pass_at_k(len(values), sum(v == 1.0 for v in values), k)
    known = [v for v in values if v is not None]
    return sum(known) / len(known)


def score(scorer: str, response: str, reference: str, **kw) -> Optional[float]:
    """Dispatch to a scorer by name; kw go to the scorer (e.g. timeout_s, mem_mb for code)."""
    if scorer == "math":
        return math_score(response, reference)
    if scorer == "code":
        return code_score(response, reference, **kw)
    if scorer == "text":
        return text_score(response, reference)
    raise ValueError(f"unknown scorer {scorer!r} (known: {', '.join(SCORERS)})")


# ---------------------------------------------------------------------------------------------
# math: the final number
# ---------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|\\frac\{-?\d+\}\{\d+\}")
# words that introduce the final answer; the first number after the last of them is the answer
_ANSWER_MARKERS = re.compile(r"答案是|答案为|答案[:：]|答[:：]|结果是|结果为|final answer|answer is|answer:|####|\\boxed\{",
                             re.IGNORECASE)


def _clean_math(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "")  # full-width digits and NBSP -> ASCII
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000,000 -> 1000000
    return text


def _to_number(token: str) -> Optional[Fraction]:
    token = token.replace(" ", "")
    m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", token)
    try:
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if "/" in token:
            num, den = token.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def final_number(text: str) -> Optional[Fraction]:
    """The answer's number: the first one after the last answer marker ("答案是", "answer is", "####",
    \\boxed{), else the last number in the text. Units, trailing periods, commas are ignored."""
    text = _clean_math(text)
    markers = list(_ANSWER_MARKERS.finditer(text))
    if markers:
        m = _NUMBER.search(text, markers[-1].end())
        if m:
            return _to_number(m.group(0))
    numbers = _NUMBER.findall(text)
    return _to_number(numbers[-1]) if numbers else None


def math_score(response: str, reference: str) -> Optional[float]:
    expected = final_number(reference)
    if expected is None:
        return None  # nothing to compare against: unscored, not wrong
    got = final_number(response)
    if got is None:
        return 0.0
    tolerance = Fraction(1, 10 ** 6) * max(1, abs(expected))
    return 1.0 if abs(got - expected) <= tolerance else 0.0


# ---------------------------------------------------------------------------------------------
# code: run it
# ---------------------------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The Python code of a reply: its ``` fenced blocks joined (python-tagged ones first when some
    are), else the whole text (a model that answers with bare code)."""
    blocks = _FENCE.findall(text or "")
    if not blocks:
        return (text or "").strip()
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return "\n\n".join(python or [body for _, body in blocks]).strip()


def code_score(response: str, reference: str, timeout_s: float = 10.0, mem_mb: int = 1024,
               unsafe: bool = False) -> Optional[float]:
    """1.0 when the response's code followed by the reference's test code exits 0 in the sandbox;
    `unsafe` (judge.unsafe_code_execution) allows unisolated runs where no sandbox can be built."""
    tests = extract_code(reference)
    try:
        ast.parse(tests)
    except SyntaxError:
        return None  # a prose reference (e.g. BELLE's): there is no test to run
    if not tests.strip():
        return None
    solution = extract_code(response)
    result = run_code(solution + "\n\n" + tests, timeout_s=timeout_s, mem_mb=mem_mb, unsafe=unsafe)
    return 1.0 if result.passed else 0.0


# ---------------------------------------------------------------------------------------------
# text: ROUGE-L F1
# ---------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


def text_tokens(text: str) -> list[str]:
    """Chinese characters one by one, other scripts by word, lower-cased, punctuation dropped."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    out = []
    for tok in _TOKEN.findall(text):
        if len(tok) > 1 and re.search(r"[\u3400-\u9fff]", tok):  # a word glued to CJK: split the CJK out
            out.extend(t for t in re.findall(r"[\u3400-\u9fff]|[^\u3400-\u9fff]+", tok))
        else:
            out.append(tok)
    return out


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, bit-parallel (Allison-Dix / Hyyro): one big-int update per
    token of b instead of a len(a) x len(b) table, so long answers cost milliseconds."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def text_score(response: str, reference: str) -> Optional[float]:
    ref, hyp = text_tokens(reference), text_tokens(response)
    if not ref:
        return None
    if not hyp:
        return 0.0
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
