"""A local server for the OpenAI Files and Batches endpoints, for the batch-judging tests (the real openai
client talks to it over HTTP):

    POST /v1/files (multipart, purpose=batch)   GET /v1/files/{id}/content
    POST /v1/batches   GET /v1/batches/{id}   GET /v1/batches   POST /v1/chat/completions (counted, refused)

A batch stays in_progress until its `polls_to_complete`-th retrieval, then completes: every request line is
answered as FakeJudgeServer would answer it (the same scores; `replies` gives the k-th answer of a key as
there), except lines whose messages carry "BATCHFAIL", which go to the error file. `paid` counts answered
lines per custom id (what the user pays); `lines` keeps every request body submitted.
`expire_after=k`: the first batch answers only its first k lines, then ends "expired". A batch with a
line carrying "BATCHINVALID" is refused as a whole at validation (status "failed", nothing answered).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers.openai_server import expected_score, prompt_key, render_score


class FakeBatchServer:
    def __init__(self, polls_to_complete: int = 3, replies: dict[str, list[str]] | None = None,
                 expire_after: int | None = None):
        self.polls_to_complete = polls_to_complete
        self.expire_after = expire_after
        self.replies = replies or {}
        self.served: Counter = Counter()  # prompt key -> completions given (picks the next given reply)
        self.lines: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.polls: Counter = Counter()
        self.paid: Counter = Counter()  # custom_id -> lines answered
        self.created = 0
        self.chat_requests = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- behaviour -----------------------------------------------------------------------------
    def upload(self, body: bytes, content_type: str) -> dict:
        msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        data = next(p.get_payload(decode=True) for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file")
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "input.jsonl", "purpose": "batch", "status": "processed"}

    def create(self, body: dict) -> dict:
        self.created += 1
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
        self.lines += [line["body"] for line in lines]
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                                  "input_file_id": body["input_file_id"], "completion_window": "24h",
                                  "status": "validating", "output_file_id": None, "error_file_id": None,
                                  "created_at": int(time.time()), "metadata": body.get("metadata"),
                                  "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        return self.batches[batch_id]

    def retrieve(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        self.polls[batch_id] += 1
        if batch["status"] in ("validating", "in_progress"):
            lines = self.files[batch["input_file_id"]].decode()
            if "BATCHINVALID" in lines:
                bad = next(i for i, x in enumerate(lines.splitlines(), 1) if "BATCHINVALID" in x)
                batch.update(status="failed", errors={"object": "list", "data": [
                    {"code": "invalid_request", "line": bad, "message": "this line is not a valid request",
                     "param": "body"}]})
            elif self.polls[batch_id] >= self.polls_to_complete:
                self._complete(batch)
            else:
                batch["status"] = "in_progress"
        return batch

    def _complete(self, batch: dict) -> None:
        out, err = [], []
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        expire = self.expire_after is not None and len(self.batches) == 1
        for line in lines[:self.expire_after] if expire else lines:
            messages = line["body"]["messages"]
            cid = line["custom_id"]
            if "BATCHFAIL" in json.dumps(messages):
                err.append({"id": f"req_{cid[:8]}", "custom_id": cid, "response": {"status_code": 400, "body": {
                    "error": {"message": "invalid request in this line", "type": "invalid_request_error"}}},
                    "error": None})
                continue
            key = prompt_key(messages)
            given = self.replies.get(key)
            content = given[min(self.served[key], len(given) - 1)] if given else render_score(key, expected_score(key))
            self.served[key] += 1
            pt = max(1, len(json.dumps(messages, ensure_ascii=False)) // 3)
            completion = {"id": f"chatcmpl-{cid[:8]}", "object": "chat.completion", "created": int(time.time()),
                          "model": line["body"]["model"],
                          "choices": [{"index": 0, "finish_reason": "stop", "message": {
                              "role": "assistant", "content": content}}],
                          "usage": {"prompt_tokens": pt, "completion_tokens": 10, "total_tokens": pt + 10}}
            out.append({"id": f"req_{cid[:8]}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": cid[:8], "body": completion}})
            self.paid[cid] += 1
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                file_id = f"file-{uuid.uuid4().hex[:12]}"
                self.files[file_id] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
                batch[name] = file_id
        batch.update(status="expired" if expire else "completed",
                     request_counts={"total": len(lines), "completed": len(out), "failed": len(err)})

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
                        return self._send(200, server.upload(body, self.headers["Content-Type"]))
                    if path.endswith("/batches"):
                        return self._send(200, server.create(json.loads(body)))
                    if path.endswith("/chat/completions"):
                        server.chat_requests += 1
                self._send(404, {"error": {"message": "not served here: batch mode must not call it"}})

        return Handler
