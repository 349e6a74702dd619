"""Secrets: nothing this package writes (status, error lines, logs, scores, reports) may hold one.

Library module (no command).
"""
from __future__ import annotations

import os
import re
import traceback
from typing import Any

REDACTED = "***"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# OpenAI-style keys, also when a server echoes one partly masked ("sk-proj-abc***xyz")
_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_*.-]{6,}")
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Redact `value` from now on, whatever variable it came from (the judge key's api_key_env may be
    named anything)."""
    if value and len(value) >= 4:
        _registered.add(value)


def _secret_values() -> list[str]:
    from_env = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4}
    return sorted(from_env | _registered, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every secret value replaced by ***: registered ones, the value of each environment
    variable whose name contains KEY, TOKEN, SECRET or PASSWORD, and anything shaped like an API key."""
    if not text:
        return text
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    return _KEY_SHAPE.sub(REDACTED, text)


def redact_obj(obj: Any) -> Any:
    """redact() applied to every string inside dicts and lists (a status, a jsonl row)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def error_line(exc: BaseException) -> str:
    """One line naming what went wrong (file:line of a bad input is in the message itself)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__)


def error_detail(exc: BaseException) -> str:
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:])
