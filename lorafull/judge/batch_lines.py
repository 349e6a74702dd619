"""How the Batch API answers, line by line and batch by batch, read into what the judge does next.

Library module (no command); used by lorafull.judge.batch_pool.

A request line comes back in one of two forms (the API's BatchRequestOutput, in the output or the error
file): a `response` with its HTTP `status_code` and body, or `response: null` with an `error` object
(`code`, `message`). Each is read into one Outcome:

    answered   status 200 with a chat completion: the reply goes into the cache, paid for
    transient  429, 408, 409, 5xx, a request timeout or a server-side error type, or a 200 whose body
               is not a completion: asked again in the next round, as the online judge retries
               (eval.judge.max_retries rounds, its backoff between them)
    unrun      batch_expired / batch_cancelled: the request never ran; asked again, not counted as a try
    permanent  any other 4xx or error: recorded unscored with the reason, never asked again

A batch that ends "failed" was refused at validation, nothing in it ran or was billed: for the
enqueued-token cap of the model (code token_limit_exceeded, "Enqueued token limit reached"), for
some lines (errors that name a line), or for a reason that names none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

TRANSIENT_STATUS = {408, 409, 429}
# error codes / types of a request the provider could not serve this time (server side, or a timeout)
TRANSIENT_ERRORS = {"request_timeout", "timeout", "server_error", "internal_error", "internal_server_error",
                    "api_error", "service_unavailable", "overloaded", "overloaded_error", "rate_limit_exceeded",
                    "rate_limit_error"}
UNRUN_ERRORS = {"batch_expired", "batch_cancelled"}
TOKEN_LIMIT_CODE = "token_limit_exceeded"


@dataclass
class Outcome:
    key: str
    kind: str  # answered | transient | unrun | permanent
    reply: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reason: str = ""


def _error_words(error) -> tuple[set[str], str]:
    """The error's code and type (lower case), and its message."""
    if not isinstance(error, dict):
        return set(), str(error or "")
    words = {str(error.get(k)).lower() for k in ("code", "type") if error.get(k)}
    return words, str(error.get("message") or error.get("code") or error)


def read_line(line: dict) -> Outcome:
    """One line of a batch's output or error file."""
    key = str(line.get("custom_id"))
    response = line.get("response")
    if not isinstance(response, dict):  # response: null, the reason in `error`
        words, message = _error_words(line.get("error"))
        kind = "unrun" if words & UNRUN_ERRORS else "transient" if words & TRANSIENT_ERRORS else "permanent"
        return Outcome(key, kind, reason=f"batch line failed ({'/'.join(sorted(words)) or 'error'}): {message}"[:300])
    status = response.get("status_code")
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    if status == 200:
        choices = body.get("choices") or []
        content = choices[0].get("message", {}).get("content") if choices and isinstance(choices[0], dict) else None
        if isinstance(content, str):
            usage = body.get("usage") or {}
            return Outcome(key, "answered", content, int(usage.get("prompt_tokens") or 0),
                           int(usage.get("completion_tokens") or 0))
        return Outcome(key, "transient", reason="batch line answered 200 without a chat completion")
    words, message = _error_words(body.get("error") or line.get("error"))
    transient = (isinstance(status, int) and (status in TRANSIENT_STATUS or status >= 500)) or words & TRANSIENT_ERRORS
    return Outcome(key, "transient" if transient else "permanent",
                   reason=f"batch line failed ({status}): {message}"[:300])


@dataclass
class Refusal:
    """Why a batch was refused at validation."""
    token_limit: bool  # the model's enqueued-token cap: the same lines go again later, in a smaller batch
    lines: dict[int, str]  # input line number (1-based) -> why that line is invalid
    message: str


def read_refusal(batch) -> Refusal:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    lines, texts, token_limit = {}, [], False
    for e in errors:
        message = str(getattr(e, "message", "") or getattr(e, "code", "") or "no reason given")
        if getattr(e, "code", None) == TOKEN_LIMIT_CODE or "enqueued token limit" in message.lower():
            token_limit = True
        if getattr(e, "line", None) is not None:
            lines[int(e.line)] = message
        texts.append(f"line {e.line}: {message}" if getattr(e, "line", None) is not None else message)
    return Refusal(token_limit, lines, "; ".join(texts[:3]) or "no reason given")
