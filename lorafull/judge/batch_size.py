"""How big a judge batch is: its requests, bytes and enqueued tokens, and where a round is cut into
batches. Library module (no command); used by lorafull.judge.batch_pool.

Enqueued tokens are what the Batch API counts against a model's cap while a batch is in flight: the
prompt tokens of every request plus its max_tokens. The prompt is counted with the judge model's own
tokenizer where tiktoken knows the model (OpenAI's), with the chat format's few tokens per message;
otherwise, or where tiktoken cannot load its encoding (it downloads it once; compute nodes are often
offline), by lorafull.judge.limits.estimate_tokens: characters / 4, one token per CJK character.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from lorafull.judge.limits import estimate_tokens

# tiktoken fetches an encoding it has not cached without a timeout: a firewalled node would hang on it
ENCODING_LOAD_S = 10.0
# the chat format's tokens around each message, and before the reply (OpenAI's counting recipe)
TOKENS_PER_MESSAGE, TOKENS_PER_REPLY = 4, 3


@lru_cache(maxsize=None)
def tokenizer_for(model: str) -> tuple[Optional[object], str]:
    """(tiktoken encoding or None, how prompts are counted) for `model`."""
    try:
        import tiktoken

        name = tiktoken.encoding_name_for_model(model)
    except (ImportError, KeyError):
        return None, "characters / 4 (no tiktoken encoding for this model)"
    loaded: dict = {}

    def load() -> None:
        try:
            loaded["encoding"] = tiktoken.get_encoding(name)
        except Exception as e:  # noqa: BLE001 -- offline, proxy...: the estimate takes over
            loaded["error"] = e

    thread = threading.Thread(target=load, name="tiktoken-load", daemon=True)
    thread.start()
    thread.join(ENCODING_LOAD_S)
    if "encoding" in loaded:
        return loaded["encoding"], f"tiktoken {name}"
    why = type(loaded["error"]).__name__ if "error" in loaded else f"no answer in {ENCODING_LOAD_S:g} s"
    return None, f"characters / 4 (tiktoken could not load {name}: {why})"


def request_tokens(body: dict) -> int:
    """Enqueued tokens of one chat-completions request body: its prompt plus max_tokens."""
    messages = body.get("messages") or []
    max_tokens = int(body.get("max_tokens") or 0)
    encoding, _ = tokenizer_for(str(body.get("model", "")))
    if encoding is None:
        return estimate_tokens(messages, max_tokens)
    text_tokens = sum(len(encoding.encode(str(m.get("content") or ""), disallowed_special=())) for m in messages)
    return text_tokens + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY + max_tokens


@dataclass
class Queued:
    """One request line waiting for a batch."""
    line: dict  # {"custom_id", "method", "url", "body"}: the input file's line
    tokens: int
    size: int  # bytes of the line in the input file, newline included
    at: float  # when it was queued (a round waits batch_wait_s for the study's other runs)

    @classmethod
    def of(cls, line: dict, at: float) -> "Queued":
        return cls(line, request_tokens(line["body"]), len(encode_line(line)), at)

    def to_json(self) -> dict:
        return {"line": self.line, "tokens": self.tokens, "size": self.size, "at": self.at}


def encode_line(line: dict) -> bytes:
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def batch_length(queue: list[Queued], max_requests: int, max_bytes: int, max_tokens: float) -> int:
    """How many requests from the front of the queue make the next batch: as many as fit under all
    three limits (0 when even the first one's tokens do not fit; a line alone over max_bytes goes
    alone, so that the provider names it instead of the queue stalling on it)."""
    n = size = tokens = 0
    for q in queue:
        if n >= max_requests or (n and size + q.size > max_bytes) or tokens + q.tokens > max_tokens:
            break
        n, size, tokens = n + 1, size + q.size, tokens + q.tokens
    return n
