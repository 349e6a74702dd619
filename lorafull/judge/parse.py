"""Read a score in [0, 1] out of a judge's free-text reply.

Judges asked for "得分: 0.8" answer in many shapes: "得分：0.8", "Score: 0.8", "0.8/1", "80%", "8/10",
"score 4 out of 5", or a bare "0.8". `parse_score` returns None when it finds no score it can trust,
and the caller asks again: a reply we cannot read is never a 0.

Rules, in order (the LAST match of the first rule that matches wins, because judges explain first and
conclude last):
1. a labelled score: 得分 / 评分 / 分数 / score / rating / grade, then a number, optionally "/ D",
   "out of D" or "%";
2. an unlabelled "N/D" or "N out of D";
3. a percentage "N%";
4. a reply that is just a number.
A number with a denominator is divided by it; a percentage by 100. A bare number above 1 is read on the
scale it most likely uses (<= 10: tenths, <= 100: percent); anything else, a negative number, or N > D
by more than rounding is out of range -> None (ask again) rather than a clamp that would invent a score.
"""
from __future__ import annotations

import re
from typing import Optional

_NUM = r"[+-]?\d+(?:\.\d+)?"
_UNIT = r"(?:\s*(?:points?|pts|分))?"
_DENOM = rf"{_UNIT}(?:\s*(?:/|／|out\s+of|满分)\s*(?P<den>{_NUM}))?"
_PCT = r"(?P<pct>\s*%)?"
_LABEL = r"(?:得分|评分|分数|打分|score|rating|grade|mark)"
# label, optional bold/asterisks/brackets/"is"/"为"/colons, the number, optional denominator or percent
_LABELLED = re.compile(
    rf"{_LABEL}[\s*_\"'“”]*(?:[(（\[][^)）\]\n]{{0,20}}[)）\]])?[^\n\d+-]{{0,12}}?(?P<num>{_NUM}){_PCT}{_DENOM}",
    re.IGNORECASE)
_FRACTION = re.compile(rf"(?<![\d.])(?P<num>{_NUM}){_UNIT}\s*(?:/|／|out\s+of)\s*(?P<den>{_NUM})(?!\d|\.\d)", re.IGNORECASE)
_PERCENT = re.compile(rf"(?<![\d.])(?P<num>{_NUM})\s*%")
_BARE = re.compile(rf"^\s*[*\"'“”]*(?P<num>{_NUM})[*\"'“”]*[.。!！]?\s*$")


def _scaled(num: float, den: Optional[float], pct: bool) -> Optional[float]:
    if num < 0:
        return None
    if pct:
        value = num / 100.0
    elif den is not None:
        if den <= 0:
            return None
        value = num / den
    elif num <= 1.0:
        value = num
    elif num <= 10.0:  # "得分: 8" from a judge that slipped into a ten-point scale
        value = num / 10.0
    elif num <= 100.0:
        value = num / 100.0
    else:
        return None
    if value > 1.0 + 1e-9:
        return None
    return max(0.0, min(1.0, value))


def parse_score(reply: Optional[str]) -> Optional[float]:
    """A score in [0, 1], or None when the reply holds no trustworthy score."""
    if not reply or not reply.strip():
        return None
    text = reply.replace("\u00a0", " ").replace("：", ":")
    for pattern in (_LABELLED, _FRACTION, _PERCENT, _BARE):
        matches = list(pattern.finditer(text))
        if not matches:
            continue
        m = matches[-1]
        groups = m.groupdict()
        den = float(groups["den"]) if groups.get("den") else None
        return _scaled(float(m.group("num")), den, bool(groups.get("pct")) or pattern is _PERCENT)
    return None
