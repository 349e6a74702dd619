"""Request pacing for the judge: requests-per-minute and tokens-per-minute token buckets, a shared
pause after a 429, and the retry policy (which errors to retry, how long to wait).

The openai client is created with max_retries=0 so every attempt passes through here: the buckets
count each attempt, and a Retry-After from the server holds back every request, not only the one that
got it (otherwise the other concurrent requests run straight into the same limit).
"""
from __future__ import annotations

import asyncio
import datetime
import email.utils
import random
import time
from dataclasses import dataclass
from typing import Optional

import openai


class TokenBucket:
    """`rate_per_minute` units refill continuously; at most `burst` units are saved up.

    A request larger than the burst is let through when the bucket is full and leaves it in debt,
    so the long-run rate still holds without ever blocking a large prompt forever."""

    def __init__(self, rate_per_minute: float, burst: Optional[float] = None):
        self.rate_per_s = rate_per_minute / 60.0
        # one second's worth by default: a full minute's burst would let 2x the limit through in the
        # first minute (full bucket + refill), which a provider counting per minute would reject
        self.burst = max(1.0, burst if burst is not None else self.rate_per_s)
        self.level = self.burst
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate_per_s)
        self.stamp = now

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` may be taken (0 = now)."""
        self._refill()
        need = min(amount, self.burst)
        return 0.0 if self.level >= need else (need - self.level) / self.rate_per_s

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Correct an estimate once the real usage is known (negative = charge more)."""
        self._refill()
        self.level = min(self.burst, self.level + amount)


class RateLimiter:
    """Concurrency + rpm + tpm, shared by all requests of one judge process."""

    def __init__(self, concurrency: int, requests_per_minute: Optional[int] = None,
                 tokens_per_minute: Optional[int] = None):
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, burst=max(1.0, tokens_per_minute / 6.0)) \
            if tokens_per_minute else None
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every request back for `seconds` (a 429's Retry-After)."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self, est_tokens: int) -> None:
        """Wait for the buckets (the caller already holds a concurrency slot). Requests are admitted
        one at a time under the lock so they come out in arrival order."""
        async with self._lock:
            while True:
                wait = self.paused_until - time.monotonic()
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_s(1))
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_s(est_tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(est_tokens)

    def settle(self, est_tokens: int, used_tokens: int) -> None:
        if self.tokens is not None:
            self.tokens.give_back(est_tokens - used_tokens)


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Upper-ish estimate before the request: ~1 token per CJK char, ~1 per 4 other chars, plus the
    completion budget. Corrected with the real usage afterwards (RateLimiter.settle)."""
    text = "".join(m["content"] for m in messages)
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return int(cjk + (len(text) - cjk) / 4) + 8 * len(messages) + max_tokens


class FatalJudgeError(RuntimeError):
    """An error no retry can fix for any item (bad key, unknown model): stop the whole judge."""


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^attempt)); jitter keeps
        concurrent requests that failed together from retrying together."""
        return random.uniform(0.0, min(self.cap_s, self.base_s * (2 ** attempt)))


def retry_after_s(error: BaseException, cap_s: float) -> Optional[float]:
    """Seconds to wait from a Retry-After / Retry-After-Ms header (a number or an HTTP date), at most
    cap_s: a server asking for an hour (or "inf") gets the cap, then another try, never a stalled judge."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        seconds = _header_seconds(value.strip(), divisor)
        if seconds is not None:
            return min(cap_s, max(0.0, seconds))  # NaN compares false: max() gives 0.0, min() keeps it
    return None


def _header_seconds(value: str, divisor: float) -> Optional[float]:
    try:
        return float(value) / divisor
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # unreadable: our own backoff applies
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


def classify(error: BaseException) -> str:
    """'retry' (transient), 'fatal' (stop everything) or 'item' (this request can never succeed)."""
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, asyncio.TimeoutError)):
        return "retry"
    if isinstance(error, openai.APIStatusError):
        code = error.status_code
        if code in (408, 409, 429) or code >= 500:
            return "retry"
        if code in (401, 403, 404):
            return "fatal"
        return "item"
    if isinstance(error, openai.APIResponseValidationError):
        return "retry"  # a garbled body from a proxy: a new attempt usually succeeds
    return "item"
