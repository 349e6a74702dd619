"""The eval.judge section of a run: who scores the answers (an API model, a model the study serves, or the
offline scorers) and how it is asked (limits, retries, cache, batches). Its own module beside the served
judge's settings (lorafull.config.serve); the schema (lorafull.config.schema) holds it in EvalConfig.

Library module (no command): lorafull.config re-exports JudgeConfig.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from lorafull.config.serve import ServeConfig
from lorafull.config.typed import ranged

# The choices of the judge's enumerated keys: the typed loader checks them at load, and nothing else does.
JudgeKind = Literal["openai", "reference"]
Scorer = Literal["math", "code", "text"]
JudgeMode = Literal["online", "batch"]


@dataclass
class JudgeConfig:
    kind: JudgeKind = "openai"
    model: str = "gpt-3.5-turbo"
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    prompts: Optional[str] = None  # BELLE format {"class", "prompt"} per line; default: the package's
    temperature: float = ranged(0.0, ge=0, le=2)
    max_tokens: int = ranged(256, ge=1)
    n_samples: int = ranged(1, ge=1)  # judge each item n times and average
    concurrency: int = ranged(16, ge=1)
    requests_per_minute: Optional[int] = ranged(None, ge=1)
    tokens_per_minute: Optional[int] = ranged(None, ge=1)
    max_retries: int = ranged(6, ge=0)
    backoff_base_s: float = ranged(1.0, ge=0)  # retry k waits uniform(0, min(60, backoff_base_s * 2^k)) s (no Retry-After)
    timeout_s: float = ranged(60.0, gt=0)
    cache: Optional[str] = None  # default STUDY_DIR/cache/judge.sqlite
    # USD per 1M tokens, by judge model: {gpt-3.5-turbo: {input: 0.5, output: 1.5}}
    prices: dict = field(default_factory=dict)
    # an unreadable judge reply is asked again this many times (a new sample), then recorded as null
    parse_retries: int = ranged(2, ge=0)
    # online | batch (the OpenAI Batch API: half the price, replies within 24 h; lorafull.judge.batch)
    mode: JudgeMode = "online"
    # mode: batch -- the provider's limits per batch input file (OpenAI: 50,000 requests, 200 MB)
    batch_max_requests: int = ranged(50_000, ge=1)
    batch_max_mb: float = ranged(200.0, gt=0)
    # mode: batch -- estimated tokens (prompt + max_tokens) the study's batches may hold in flight at
    # once for this judge model (the provider's enqueued-token cap of your usage tier); null: no cap
    # of our own, a batch the provider refuses for its cap waits and goes again smaller
    enqueued_token_limit: Optional[int] = ranged(None, ge=1)
    # mode: batch -- requests of runs that reach the judge early wait this long for the study's other
    # runs, so that they share batches (one batch and one poll for the study, not one per run)
    batch_wait_s: float = ranged(3600.0, ge=0)
    # kind: reference -- eval class -> offline scorer (math | code | text); unlisted classes use text
    scorers: dict[str, Scorer] = field(default_factory=lambda: {"math": "math", "code": "code"})
    # kind: reference -- where no sandbox (bwrap / unshare) can be built, run code answers unisolated
    # (plain subprocesses with rlimits) instead of refusing: for answers you trust only
    unsafe_code_execution: bool = False
    # reply as JSON {"score": 0..1, "reason": str} through response_format (a JSON schema), validated;
    # for endpoints that support structured output
    structured: bool = False
    # a Retry-After longer than this (3600, inf) waits this long and tries again, so no header stalls the judge
    retry_after_cap_s: float = ranged(120.0, gt=0)
    # this many items in a row failing after all their retries stop the judge with one error line
    max_consecutive_failures: int = ranged(10, ge=1)
    pass_k: int = ranged(1, ge=1)  # kind: reference with eval.num_samples n > 1: the unbiased pass@k (math / code scorers)
    # a judge model served by the study itself (vLLM or transformers serve): no API key, no base_url
    serve: Optional[ServeConfig] = None
