"""Read a judge's reply the way a careful human grader would: a score in [0, 1], or no score.

The judge prompts ask for "Score: X" with X from 0 to 1. Replies come in other shapes too; this is the
one reading of them (README, "The judge"):

1. JSON. A JSON object with a "score" key (the whole reply, a ```json block, or an object inside the
   text) decides alone: a number is on the 0..1 scale, or on the object's "max_score" / "out_of" /
   "max" / "scale"; a string is read by the rules below; null or "N/A" is no score.
2. A labelled score: Score / Rating / Grade / 得分 / 分数 / 评分 / 打分, in any case, with markdown,
   quotes, ":", "is", "of", "为" between label and number ("**Score:** 0.8", "I would give it a score
   of 4 out of 5", "得分：0.8"). When labels disagree, the strongest kind wins: a label qualified as
   final (final / overall / 最终 / 综合) beats one that starts a line, which beats one inside a
   sentence; a label inside parentheses is an aside and never counts ("Score: 0.9 (the reference
   would get score: 0.1)" is 0.9). Labels of the winning kind that still disagree are conflicting
   scores: no score. A label followed by N/A (none, null, 无, 不适用, "-") is no score, and no
   unlabelled number elsewhere replaces it ("Score: N/A - 0 out of 1 criteria" is not a 0).
3. Without any label: a reply, or its last line, that is only a score ("0.8", "8/10", "80%", "**0.8**").
   Any other number in running text is not read as a score.

Scale: the scale the reply states for that number -- "x/10", "x out of 5", "3分（满分5分）",
"Score (0-10): 7", "80%" -- or, for a number without one, a scale stated once anywhere in the reply
("满分10分", "on a scale of 0 to 10", "百分制"); otherwise the prompt's 0..1 scale. A value below 0 or
above its scale is out of range: no score, never clamped and never re-read on another scale
("Score: 1.05" and "Score: 8" are unreadable, not 0.105 or 0.8). A decimal comma is a decimal point
("0,8" is 0.8); a range ("0.5-0.6") is not a score.

No score means None: the judge asks again (eval.judge.parse_retries), then records score null with
the raw reply. A reply we cannot read is never a 0.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Optional

# "0,8" is a decimal comma (0.8), as many European judges write it
NUM = r"[+-]?(?:\d+(?:\.\d*|,\d+)?|\.\d+)(?:[eE][+-]?\d+)?"
# a range "0.5-0.6" is not one score (and no backtracking to read "0." or "0" out of it)
_NOT_A_RANGE = r"(?!\s*(?:-|–|~|to\b)\s*\d)"
_UNIT = r"(?:\s*(?:分|points?|pts?))?"
_NA = r"(?:n\s*/\s*a\b|n\.a\.|none\b|null\b|no\s+score\b|not\s+applicable\b|无法评分|不适用|无|--?(?!\s*\d)|—)"
_QUALIFIER = r"(?:final|overall|最终|综合)"
_LABEL = (rf"(?P<qual>{_QUALIFIER}\s*)?(?:\b(?:score|rating|grade)\b|得分|分数|评分|打分|"
          r"\b(?:give|rate)\s+(?:it|this|the\s+answer)\b)")
# between label and value: markdown, quotes, colons and a few joining words, nothing else
_JOIN = r"(?:[\s*_#`\"'“”:：=]|\bis\b|\bof\b|\ba\b|\b(?:would|should|will)\s+be\b|为|是)*"
# a scale written in parentheses right after the label or the number: (0-10), (out of 5), （满分5分）
_PAREN_SCALE = (rf"[(（\[]\s*(?:(?:0|1)\s*(?:-|–|~|to|至|到)\s*(?P<{{g}}a>{NUM})|(?:out\s+of|max(?:imum)?|满分)"
                rf"\s*[:：]?\s*(?P<{{g}}b>{NUM})\s*(?:分|points?)?|(?P<{{g}}c>百分制))\s*[)）\]]")
_OTHER_PAREN = r"[(（\[][^)）\]\n]{0,30}[)）\]]"
_VALUE = (rf"(?:(?P<na>{_NA})|(?P<num>{NUM})(?![\d.,]?\d){_NOT_A_RANGE}(?P<pct>\s*%)?{_UNIT}"
          rf"(?:\s*(?:/|／|\bout\s+of\b)\s*(?P<den>{NUM}){_UNIT})?"
          rf"(?:\s*{_PAREN_SCALE.format(g='post')})?)")
_LABELLED = re.compile(
    rf"{_LABEL}\s*(?:{_PAREN_SCALE.format(g='pre')}|{_OTHER_PAREN})?{_JOIN}{_VALUE}", re.IGNORECASE)
_ONLY_SCORE = re.compile(
    rf"^[\s*_#`\"'“”]*(?P<num>{NUM})(?P<pct>\s*%)?(?:\s*(?:/|／|\bout\s+of\b)\s*(?P<den>{NUM}))?"
    rf"[\s*_`\"'“”.。!！]*$", re.IGNORECASE)
_STATED_SCALE = re.compile(
    rf"满分\s*[:：]?\s*(?P<a>{NUM})\s*分?|(?P<b>{NUM})\s*分制|(?P<c>百)分制|(?P<d>十)分制|(?P<e>五)分制|"
    rf"scale\s+(?:of|from)\s+(?:0|1)\s*(?:-|–|to)\s*(?P<f>{NUM})|(?P<g>{NUM})-point\s+scale", re.IGNORECASE)
_JSON_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_CHINESE_SCALES = {"百": 100.0, "十": 10.0, "五": 5.0}
_JSON_SCALE_KEYS = ("max_score", "out_of", "max", "scale")


@dataclass(frozen=True)
class Reading:
    """score in [0, 1], or None with `problem`: no score | n/a | conflicting scores | out of range."""
    score: Optional[float]
    problem: Optional[str] = None


_NO_SCORE = Reading(None, "no score")


def parse_score(reply: Optional[str]) -> Optional[float]:
    """A score in [0, 1], or None when a careful reader finds no single score in range."""
    return read_score(reply).score


def read_score(reply: Optional[str]) -> Reading:
    if not reply or not reply.strip():
        return _NO_SCORE
    text = reply.replace("\u00a0", " ").replace("\u3000", " ")
    from_json = _read_json(text)
    if from_json is not None:
        return from_json
    labelled = _read_labelled(text)
    if labelled is not None:
        return labelled
    return _read_unlabelled(text)


def read_structured(reply: Optional[str]) -> Reading:
    """The reply of judge.structured: exactly {"score": number in 0..1, "reason": string}."""
    try:
        obj = json.loads(reply or "")
    except json.JSONDecodeError:
        return Reading(None, "not JSON")
    if not isinstance(obj, dict) or not isinstance(obj.get("reason"), str):
        return Reading(None, "not {score, reason}")
    value = obj.get("score")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return Reading(None, "n/a" if value is None else "no score")
    return _in_range(float(value), 1.0)


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _in_range(value: float, scale: float) -> Reading:
    if not math.isfinite(value) or not math.isfinite(scale) or scale <= 0:
        return Reading(None, "out of range")
    if value < 0 or value > scale * (1 + 1e-9):
        return Reading(None, "out of range")
    return Reading(min(1.0, value / scale))


# ---------------------------------------------------------------------------------------------
def _read_json(text: str) -> Optional[Reading]:
    """The reading of a JSON object's "score", or None when the reply holds no such object."""
    found = []
    candidates = [text.strip()] + _JSON_FENCE.findall(text) + _JSON_OBJECT.findall(text)
    for chunk in candidates:
        try:
            obj = json.loads(chunk)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            keys = {str(k).lower(): k for k in obj}
            if "score" in keys:
                scales = [obj[keys[k]] for k in _JSON_SCALE_KEYS if k in keys]
                found.append((obj[keys["score"]], scales[0] if scales else None))
    if not found:
        return None
    readings = {_read_json_value(v, scale) for v, scale in found}
    return readings.pop() if len(readings) == 1 else Reading(None, "conflicting scores")


def _read_json_value(value, scale) -> Reading:
    if value is None:
        return Reading(None, "n/a")
    if isinstance(value, bool):
        return _NO_SCORE
    if isinstance(value, (int, float)):
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
            return _NO_SCORE  # a scale we cannot read: no guess
        return _in_range(float(value), 1.0 if scale is None else float(scale))
    if isinstance(value, str):
        inner = _read_labelled("score: " + value)
        return inner if inner is not None else _NO_SCORE
    return _NO_SCORE


def _stated_scale(text: str) -> Optional[float]:
    """The one scale the reply states for its scores (满分10分, on a scale of 0 to 10), if any."""
    scales = set()
    for m in _STATED_SCALE.finditer(text):
        word = m.group("c") or m.group("d") or m.group("e")
        if word:
            scales.add(_CHINESE_SCALES[word])
        else:
            scales.add(_number(next(g for g in (m.group(k) for k in "abfg") if g)))
    return scales.pop() if len(scales) == 1 else None


def _value_of(m: re.Match, default_scale: float) -> Reading:
    if m.group("na"):
        return Reading(None, "n/a")
    num = _number(m.group("num"))
    if m.group("pct"):
        return _in_range(num, 100.0)
    for key in ("den", "posta", "postb", "prea", "preb"):
        if m.groupdict().get(key):
            return _in_range(num, _number(m.group(key)))
    if m.groupdict().get("postc") or m.groupdict().get("prec"):
        return _in_range(num, 100.0)
    return _in_range(num, default_scale)


def _rank(text: str, m: re.Match) -> int:
    """0 = an aside in parentheses (ignored), 1 = inside a sentence, 2 = starts a line, 3 = final."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    before = text[line_start:m.start()]
    if before.count("(") + before.count("（") > before.count(")") + before.count("）"):
        return 0
    if m.group("qual"):
        return 3
    return 2 if not re.sub(r"[\s*_#>`\-•\"'“”]", "", before) else 1


def _read_labelled(text: str) -> Optional[Reading]:
    """The reading of the strongest labels, or None when no label is followed by a value."""
    scale = _stated_scale(text) or 1.0
    ranked = [(_rank(text, m), m) for m in _LABELLED.finditer(text)]
    ranked = [(r, m) for r, m in ranked if r > 0]
    if not ranked:
        return None
    top = max(r for r, _ in ranked)
    readings = [_value_of(m, scale) for r, m in ranked if r == top]
    bad = [x for x in readings if x.score is None]
    if bad:
        return bad[-1]
    values = {round(x.score, 9) for x in readings}
    return readings[-1] if len(values) == 1 else Reading(None, "conflicting scores")


def _read_unlabelled(text: str) -> Reading:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for candidate in (text.strip(), lines[-1] if lines else ""):
        m = _ONLY_SCORE.match(candidate)
        if m:
            num = _number(m.group("num"))
            if m.group("pct"):
                return _in_range(num, 100.0)
            if m.group("den"):
                return _in_range(num, _number(m.group("den")))
            return _in_range(num, _stated_scale(text) or 1.0)
    return _NO_SCORE
