"""A local server for the OpenAI Files and Batches endpoints that fails the way the Batch API does, for
the batch-judging tests (the real openai client talks to it over HTTP):

    POST /v1/files (multipart, purpose=batch)   GET /v1/files/{id}/content
    POST /v1/batches   GET /v1/batches/{id}   GET /v1/batches   POST /v1/chat/completions (counted, refused)

A batch is validated at its first retrieval and completes at its `polls_to_complete`-th: every request
line is answered as FakeJudgeServer would answer it (the same scores; `replies` gives the k-th answer of
a key as there). `paid` counts answered lines per custom id (what the user pays); `lines` keeps every
request body submitted; `polls` counts retrievals per batch.

Failures, by a marker in a line's messages or by a setting:
    BATCHFAIL        a permanent 400: an error-file line with the response's status 400
    BATCH500xK       the first K times the line runs: status 500 (server_error) in the output file
    BATCH429xK       the first K times: status 429 (rate_limit_exceeded) in the output file
    BATCHNULLxK      the first K times: an error-file line with response null, error request_timeout
    BATCHINVALID     the whole batch is refused at validation, the error naming the line
    BATCHBADFILE     the whole batch is refused at validation, the error naming no line
    shuffle=True     output lines in a shuffled order
    expire_after=k   the first batch answers its first k lines, then ends "expired"; the others get
                     batch_expired error lines (expired_lines="error") or nothing ("missing")
    enqueued_token_limit=N   a batch whose tokens (characters / 4 of its lines + max_tokens), with
                     those of the batches in progress, pass N is refused at validation
                     (token_limit_exceeded, "Enqueued token limit reached ...")
    files_502=k      the first k uploads and the first k downloads answer 502
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers.openai_server import expected_score, prompt_key, render_score

_TRANSIENT = re.compile(r"BATCH(500|429|NULL)x(\d+)")


class FakeBatchServer:
    def __init__(self, polls_to_complete: int = 3, replies: dict[str, list[str]] | None = None,
                 expire_after: int | None = None, expired_lines: str = "error", shuffle: bool = False,
                 enqueued_token_limit: int | None = None, files_502: int = 0):
        self.polls_to_complete = polls_to_complete
        self.expire_after, self.expired_lines = expire_after, expired_lines
        self.shuffle, self.enqueued_token_limit, self.files_502 = shuffle, enqueued_token_limit, files_502
        self.replies = replies or {}
        self.served: Counter = Counter()  # prompt key -> completions given (picks the next given reply)
        self.failed_runs: Counter = Counter()  # custom_id -> transient failures given
        self.lines: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.tokens: dict[str, int] = {}  # batch id -> its enqueued tokens (the server's own count)
        self.polls: Counter = Counter()
        self.paid: Counter = Counter()  # custom_id -> lines answered
        self.refused_for_tokens = 0
        self.busy_at_create: list[int] = []  # batches validating or in progress when each batch was created
        self.errors_502 = Counter()  # "upload" / "content" -> 502s given
        self.created = 0
        self.chat_requests = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def retrievals(self) -> int:
        return sum(self.polls.values())

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- files and batches ---------------------------------------------------------------------
    def upload(self, body: bytes, content_type: str) -> dict:
        # the multipart body by hand: the email parser takes seconds over a 50,000-line file
        boundary = b"--" + content_type.split("boundary=")[1].strip('"').encode()
        part = next(p for p in body.split(boundary) if b'name="file"' in p.split(b"\r\n\r\n", 1)[0])
        data = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "input.jsonl", "purpose": "batch", "status": "processed"}

    def _input(self, batch: dict) -> list[dict]:
        return [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]

    def create(self, body: dict) -> dict:
        self.created += 1
        self.busy_at_create.append(sum(b["status"] in ("validating", "in_progress") for b in self.batches.values()))
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                 "metadata": body.get("metadata"), "request_counts": {"total": 0, "completed": 0, "failed": 0}}
        raw = [x for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
        lines = [json.loads(x) for x in raw]
        self.lines += [line["body"] for line in lines]
        batch["request_counts"]["total"] = len(lines)
        self.tokens[batch_id] = sum(len(text) // 4 + int(x["body"].get("max_tokens") or 0) for text, x in zip(raw, lines))
        self.batches[batch_id] = batch
        return batch

    def retrieve(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        self.polls[batch_id] += 1
        if batch["status"] == "validating":
            self._validate(batch)
        if batch["status"] == "in_progress" and self.polls[batch_id] >= self.polls_to_complete:
            self._complete(batch)
        return batch

    def _validate(self, batch: dict) -> None:
        lines = self.files[batch["input_file_id"]].decode().splitlines()
        bad = next((i for i, x in enumerate(lines, 1) if "BATCHINVALID" in x), None)
        if bad is not None:
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "line": bad, "message": "this line is not a valid request", "param": "body"}]})
            return
        if any("BATCHBADFILE" in x for x in lines):
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_file", "line": None, "message": "the input file could not be read", "param": None}]})
            return
        busy = sum(self.tokens[b["id"]] for b in self.batches.values() if b["status"] == "in_progress")
        limit = self.enqueued_token_limit
        if limit is not None and busy + self.tokens[batch["id"]] > limit:
            self.refused_for_tokens += 1
            model = self._input(batch)[0]["body"]["model"]
            batch.update(status="failed", errors={"object": "list", "data": [{
                "code": "token_limit_exceeded", "line": None, "param": None,
                "message": f"Enqueued token limit reached for {model} in organization org-test. Limit: {limit:,} "
                           "enqueued tokens. Please try again once some in_progress batches have been completed."}]})
            return
        batch["status"] = "in_progress"

    def _answer(self, line: dict) -> tuple[str, dict]:
        """("out" | "err", the result line) for one request line."""
        messages, cid = line["body"]["messages"], line["custom_id"]
        text = json.dumps(messages, ensure_ascii=False)
        if "BATCHFAIL" in text:
            return "err", {"id": f"req_{cid[:8]}", "custom_id": cid, "error": None, "response": {
                "status_code": 400, "request_id": cid[:8], "body": {"error": {
                    "message": "invalid request in this line", "type": "invalid_request_error"}}}}
        marker = _TRANSIENT.search(text)
        if marker and self.failed_runs[cid] < int(marker.group(2)):
            self.failed_runs[cid] += 1
            if marker.group(1) == "NULL":
                return "err", {"id": f"req_{cid[:8]}", "custom_id": cid, "response": None, "error": {
                    "code": "request_timeout", "message": "The underlying call to the model timed out."}}
            status, kind = (500, "server_error") if marker.group(1) == "500" else (429, "rate_limit_exceeded")
            return "out", {"id": f"req_{cid[:8]}", "custom_id": cid, "error": None, "response": {
                "status_code": status, "request_id": cid[:8], "body": {"error": {
                    "message": "The server had an error while processing your request.", "type": kind}}}}
        key = prompt_key(messages)
        given = self.replies.get(key)
        content = given[min(self.served[key], len(given) - 1)] if given else render_score(key, expected_score(key))
        self.served[key] += 1
        pt = max(1, len(text) // 3)
        completion = {"id": f"chatcmpl-{cid[:8]}", "object": "chat.completion", "created": int(time.time()),
                      "model": line["body"]["model"], "choices": [{"index": 0, "finish_reason": "stop", "message": {
                          "role": "assistant", "content": content}}],
                      "usage": {"prompt_tokens": pt, "completion_tokens": 10, "total_tokens": pt + 10}}
        self.paid[cid] += 1
        return "out", {"id": f"req_{cid[:8]}", "custom_id": cid, "error": None,
                       "response": {"status_code": 200, "request_id": cid[:8], "body": completion}}

    def _complete(self, batch: dict) -> None:
        lines = self._input(batch)
        expire = self.expire_after is not None and next(iter(self.batches)) == batch["id"]
        rows = {"out": [], "err": []}
        for i, line in enumerate(lines):
            if expire and i >= self.expire_after:
                if self.expired_lines == "error":
                    rows["err"].append({"id": f"req_{i}", "custom_id": line["custom_id"], "response": None, "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired."}})
                continue
            where, row = self._answer(line)
            rows[where].append(row)
        if self.shuffle:
            for part in rows.values():
                random.Random(len(lines)).shuffle(part)
        for name, part in (("output_file_id", rows["out"]), ("error_file_id", rows["err"])):
            if part:
                file_id = f"file-{uuid.uuid4().hex[:12]}"
                self.files[file_id] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode()
                batch[name] = file_id
        answered = sum(1 for r in rows["out"] if r["response"]["status_code"] == 200)
        status = "expired" if expire else "completed"
        batch.update({"status": status, f"{status}_at": int(time.time())})
        batch.update(request_counts={"total": len(lines), "completed": answered, "failed": len(lines) - answered})

    def _bad_gateway(self, what: str) -> bool:
        if self.errors_502[what] < self.files_502:
            self.errors_502[what] += 1
            return True
        return False

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, obj, raw: bytes | None = None):
                body = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                parts = self.path.split("?")[0].strip("/").split("/")  # v1, files|batches, id, content
                with server.lock:
                    if parts[1:2] == ["files"] and parts[-1] == "content":
                        if server._bad_gateway("content"):
                            return self._send(502, {"error": {"message": "bad gateway"}})
                        return self._send(200, None, raw=server.files[parts[2]])
                    if parts[1:] == ["batches"]:
                        data = sorted(server.batches.values(), key=lambda b: -b["created_at"])
                        return self._send(200, {"object": "list", "data": data, "has_more": False})
                    if parts[1:2] == ["batches"]:
                        return self._send(200, server.retrieve(parts[2]))
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0].rstrip("/")
                with server.lock:
                    if path.endswith("/files"):
                        if server._bad_gateway("upload"):
                            return self._send(502, {"error": {"message": "bad gateway"}})
                        return self._send(200, server.upload(body, self.headers["Content-Type"]))
                    if path.endswith("/batches"):
                        return self._send(200, server.create(json.loads(body)))
                    if path.endswith("/chat/completions"):
                        server.chat_requests += 1
                self._send(404, {"error": {"message": "not served here: batch mode must not call it"}})

        return Handler
