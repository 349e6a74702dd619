"""What one judge request is, the same whether it goes online (lorafull.judge.client) or in a batch
(lorafull.judge.batch): its cache key, the options sent with the messages, and how its reply is read.
Both paths build requests here, so a reply the batch bought is the reply the online path looks up."""
from __future__ import annotations

from typing import Optional

from lorafull.config import JudgeConfig
from lorafull.judge.cache import cache_key
from lorafull.judge.parse import Reading, read_score, read_structured

# a re-ask after an unreadable reply must be able to differ from it, even from a greedy judge
REASK_MIN_TEMPERATURE = 0.7
# judge.structured: the reply must be this object (range checked by read_structured: strict JSON
# schemas of some endpoints refuse minimum/maximum)
STRUCTURED_FORMAT = {"type": "json_schema", "json_schema": {"name": "judgment", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["score", "reason"],
    "properties": {"score": {"type": "number", "description": "from 0 to 1"}, "reason": {"type": "string"}}}}}


def attempts(cfg: JudgeConfig) -> range:
    """Attempt 0, then one re-ask per eval.judge.parse_retries while the reply stays unreadable."""
    return range(1 + max(0, cfg.parse_retries))


def request_key(cfg: JudgeConfig, messages: list[dict], sample: int, attempt: int) -> str:
    # structured replies are other texts for the same prompt: cached apart
    extra = {"response_format": "judgment-json"} if cfg.structured else None
    return cache_key(cfg.model, messages, sample, attempt, extra)


def request_options(cfg: JudgeConfig, attempt: int) -> dict:
    """Everything sent with the messages, but the model."""
    temperature = cfg.temperature if attempt == 0 else max(cfg.temperature, REASK_MIN_TEMPERATURE)
    options = {"temperature": temperature, "max_tokens": cfg.max_tokens}
    if cfg.structured:
        options["response_format"] = STRUCTURED_FORMAT
    return options


def read_reply(cfg: JudgeConfig, reply: Optional[str]) -> Reading:
    return read_structured(reply) if cfg.structured else read_score(reply)
