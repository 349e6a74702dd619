"""One judgment = n_samples replies of the judge model, each read into a score.

Every reply goes through the cache first: a reply already paid for (by this process, an earlier one
that crashed, or another run's job) is never requested again. Requests go through the official openai
client (AsyncOpenAI, any OpenAI-compatible endpoint) with its own retries off (max_retries=0): the
pacing and retry policy live in judge_limits, where every attempt is counted.

Nothing here can hang: every attempt has one deadline for connect + all reads (timeout_s; the
client's own timeout is per read, so a server trickling a byte a second would never trip it), a
Retry-After waits at most retry_after_cap_s, and max_consecutive_failures items failing in a row
(counted in the shared cache, over all the runs that use it) stop the judge. Across processes, a
prompt is claimed in the cache before it is requested, so two processes sharing the cache pay once.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import urlparse

import openai

from lorafull.config import JudgeConfig
from lorafull.judge.cache import CachedReply, JudgeCache
from lorafull.judge.limits import FatalJudgeError, RateLimiter, RetryPolicy, classify, estimate_tokens, retry_after_s
from lorafull.judge.parse import Reading
from lorafull.judge.request import attempts, read_reply, request_key, request_options
from lorafull.runs import register_secret

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
# a claimed prompt whose owner stops renewing (killed) is free again after this long
_LEASE_MARGIN_S = 300.0
_CLAIM_POLL_S = 0.2


class JudgeSetupError(ValueError):
    """Missing key or bad judge settings; the message names the settings key."""


class ItemFailed(Exception):
    """This item's request cannot succeed (kind 'request') or kept failing (kind 'transport')."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class MalformedResponse(Exception):
    """A 200 whose body is not a chat completion (a proxy's HTML page, a cut-off JSON)."""


def resolve_api_key(cfg: JudgeConfig) -> str:
    """The key from the environment variable named by judge.api_key_env; never stored anywhere.
    A local server (127.0.0.1 / localhost) may run without one."""
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        register_secret(key)  # echoed back in an error, it is redacted from every file and line
        return key
    host = urlparse(cfg.base_url).hostname if cfg.base_url else None
    if host in _LOCAL_HOSTS:
        return "no-key-needed-for-a-local-server"
    raise JudgeSetupError(f"eval.judge.api_key_env: environment variable {cfg.api_key_env} is not set "
                          f"(needed by the judge at {cfg.base_url or 'api.openai.com'})")


def request_cost(cfg: JudgeConfig, prompt_tokens: int, completion_tokens: int) -> Optional[float]:
    """USD from judge.prices[model] = {input: $/1M tokens, output: $/1M tokens}; None when unpriced."""
    price = cfg.prices.get(cfg.model)
    if not isinstance(price, dict):
        return None
    return (prompt_tokens * float(price.get("input", 0.0)) + completion_tokens * float(price.get("output", 0.0))) / 1e6


@dataclass
class Judgment:
    score: Optional[float] = None
    samples: list = field(default_factory=list)  # score per sample (None = unreadable)
    replies: list = field(default_factory=list)  # raw reply text of every attempt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    paid_requests: int = 0  # replies bought by this process (the rest came from the cache)
    cached_replies: int = 0
    problem: Optional[str] = None  # why the last unreadable sample was unreadable (parse.Reading)


@dataclass
class Counters:
    requests: int = 0  # HTTP attempts
    retries: int = 0
    paid: int = 0  # successful replies bought
    cache_hits: int = 0
    paid_prompt_tokens: int = 0
    paid_completion_tokens: int = 0


class OpenAIJudge:
    """api_key: a served judge's bearer token (else the key from eval.judge.api_key_env). gone: asked after
    a request that could not get through; returns why the endpoint will never answer again (a served
    judge that died), which stops the judge at once instead of after every retry."""

    def __init__(self, cfg: JudgeConfig, cache: JudgeCache, api_key: Optional[str] = None,
                 gone: Optional[Callable[[], Optional[str]]] = None):
        self.cfg = cfg
        self.cache = cache
        self.gone = gone
        self.client = openai.AsyncOpenAI(api_key=api_key or resolve_api_key(cfg), base_url=cfg.base_url,
                                         max_retries=0, timeout=cfg.timeout_s)
        self.limiter = RateLimiter(cfg.concurrency, cfg.requests_per_minute, cfg.tokens_per_minute)
        self.policy = RetryPolicy(max_retries=cfg.max_retries, base_s=cfg.backoff_base_s)
        self.counters = Counters()
        self._inflight: dict[str, asyncio.Future] = {}  # two items with the same prompt share one request
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"  # of cache claims

    async def close(self) -> None:
        await self.client.close()

    async def judge(self, messages: list[dict]) -> Judgment:
        """n_samples scores, each asked again (parse_retries) while unreadable. An item that fails
        after all its retries counts towards max_consecutive_failures; any success resets the count."""
        endpoint = f"{self.cfg.base_url or 'api.openai.com'} {self.cfg.model}"
        try:
            out = await self._judge(messages)
        except ItemFailed as e:
            in_a_row = self.cache.count_failure(endpoint)  # shared by every run using this cache
            if in_a_row >= self.cfg.max_consecutive_failures:
                raise FatalJudgeError(
                    f"judge at {self.cfg.base_url or 'api.openai.com'} (model {self.cfg.model}): {in_a_row} "
                    f"items in a row failed, counted over the runs sharing eval.judge.cache "
                    f"(eval.judge.max_consecutive_failures); last: {e}") from None
            raise
        self.cache.count_success(endpoint)
        return out

    async def _judge(self, messages: list[dict]) -> Judgment:
        out = Judgment()
        for sample in range(max(1, self.cfg.n_samples)):
            reading = Reading(None, "no score")
            for attempt in attempts(self.cfg):
                reply, pt, ct, paid = await self.reply(messages, sample, attempt)
                out.replies.append(reply)
                out.prompt_tokens += pt
                out.completion_tokens += ct
                out.paid_requests += int(paid)
                out.cached_replies += int(not paid)
                reading = read_reply(self.cfg, reply)
                if reading.score is not None:
                    break
            out.samples.append(reading.score)
            if reading.score is None:
                out.problem = reading.problem
        scored = [v for v in out.samples if v is not None]
        out.score = sum(scored) / len(scored) if scored else None  # never a 0 for "could not read"
        return out

    async def reply(self, messages: list[dict], sample: int, attempt: int) -> tuple[str, int, int, bool]:
        """(reply, prompt_tokens, completion_tokens, paid_now) for one sample/attempt, cache first."""
        key = request_key(self.cfg, messages, sample, attempt)
        hit = self.cache.get(key)
        if hit is not None:
            self.counters.cache_hits += 1
            return hit.reply, hit.prompt_tokens, hit.completion_tokens, False
        if key in self._inflight:
            reply, pt, ct, _ = await asyncio.shield(self._inflight[key])
            return reply, pt, ct, False
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._claimed_reply(key, messages, attempt)
            future.set_result(result)
            return result
        except asyncio.CancelledError:
            future.cancel()  # a cancelled future cannot carry CancelledError as its exception
            raise
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._inflight.pop(key, None)

    async def _claimed_reply(self, key: str, messages: list[dict], attempt: int) -> tuple[str, int, int, bool]:
        """Claim the key and buy the reply, or take the reply another process bought meanwhile."""
        hit = await self._claim_or_wait(key)
        if hit is not None:
            self.counters.cache_hits += 1
            return hit.reply, hit.prompt_tokens, hit.completion_tokens, False
        try:
            reply, pt, ct = await self._request(messages, request_options(self.cfg, attempt), key)
            self.cache.put(key, self.cfg.model, reply, pt, ct)  # stored before anything else can fail
            return reply, pt, ct, True
        finally:
            self.cache.release(key, self.owner)  # paid or given up: waiters read the reply or try themselves

    async def _claim_or_wait(self, key: str) -> Optional[CachedReply]:
        """None once this process holds the claim on `key`; the cached reply if another process,
        holding the claim, paid for it meanwhile."""
        while True:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
            if self.cache.claim(key, self.owner, self.cfg.timeout_s + _LEASE_MARGIN_S):
                hit = self.cache.get(key)  # stored between our look and our claim
                if hit is not None:
                    self.cache.release(key, self.owner)
                return hit
            await asyncio.sleep(_CLAIM_POLL_S)

    async def _attempt(self, messages: list[dict], options: dict, est: int) -> tuple[str, int, int]:
        """One HTTP attempt under one deadline for connect + every read."""
        try:
            resp = await asyncio.wait_for(self.client.chat.completions.create(
                model=self.cfg.model, messages=messages, **options), timeout=self.cfg.timeout_s)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"no complete reply within timeout_s={self.cfg.timeout_s:g} s") from None
        return _read_completion(resp, est)

    async def _request(self, messages: list[dict], options: dict, key: str) -> tuple[str, int, int]:
        est = estimate_tokens(messages, self.cfg.max_tokens)
        last_error = "no attempt made"
        for retry in range(self.policy.max_retries + 1):
            async with self.limiter.slots:
                await self.limiter.acquire(est)
                self.counters.requests += 1
                self.cache.claim(key, self.owner, self.cfg.timeout_s + _LEASE_MARGIN_S)  # renew the lease
                try:
                    reply, pt, ct = await self._attempt(messages, options, est)
                except Exception as e:  # noqa: BLE001 -- sorted by classify() below
                    self.limiter.settle(est, 0)
                    kind = "retry" if isinstance(e, (MalformedResponse, json.JSONDecodeError)) else classify(e)
                    last_error = _describe(e)
                    if kind == "fatal":
                        raise FatalJudgeError(f"judge at {self.cfg.base_url or 'api.openai.com'} "
                                              f"(model {self.cfg.model}): {last_error}") from None
                    if kind == "item":
                        raise ItemFailed(last_error, "request") from None
                    reason = await asyncio.to_thread(self.gone) if self.gone is not None else None
                    if reason:
                        raise FatalJudgeError(reason) from None
                    wait = retry_after_s(e, self.cfg.retry_after_cap_s)
                    if wait is not None:
                        self.limiter.pause(wait)  # everybody waits, not only this request
                        wait += random.uniform(0.0, 0.1 * wait + 0.05)
                    else:
                        wait = self.policy.backoff_s(retry)
                else:
                    self.limiter.settle(est, pt + ct)
                    self.counters.paid += 1
                    self.counters.paid_prompt_tokens += pt
                    self.counters.paid_completion_tokens += ct
                    return reply, pt, ct
            if retry < self.policy.max_retries:
                self.counters.retries += 1
                self.cache.claim(key, self.owner, wait + self.cfg.timeout_s + _LEASE_MARGIN_S)
                await asyncio.sleep(wait)  # outside the slot: others may use it meanwhile
        raise ItemFailed(f"gave up after {self.policy.max_retries + 1} attempts: {last_error}", "transport")


def _read_completion(resp, est_tokens: int) -> tuple[str, int, int]:
    choices = getattr(resp, "choices", None)
    if not choices:
        raise MalformedResponse(f"not a chat completion: {str(resp)[:120]!r}")
    content = getattr(choices[0].message, "content", None)
    if not isinstance(content, str):
        raise MalformedResponse("completion without text content")
    usage = getattr(resp, "usage", None)
    pt = getattr(usage, "prompt_tokens", None)
    ct = getattr(usage, "completion_tokens", None)
    if pt is None or ct is None:  # some compatible servers omit usage: keep the estimate, flagged by cost
        pt, ct = est_tokens, len(content)
    return content, int(pt), int(ct)


def _describe(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}{f' {status}' if status else ''}: {text[:200]}"
