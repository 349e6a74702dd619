"""A small OpenAI-compatible chat-completions server for the judge's tests and benchmark.

    python tests/openai_server.py [--latency-ms 100] [--fault-rate 0.2]   # prints "PORT <n>", serves until killed

POST /v1/chat/completions answers with a score in one of several formats ("得分: 0.8", "Score: 0.8",
"8/10", "80%", "score 4 out of 5", a bare number...). The score of a prompt is a function of the prompt,
so a test knows what the judge must read. GET /stats returns what the server saw (JSON).

Faults, per distinct prompt ("key"): the k-th request of a key gets the k-th fault of its plan, later
requests succeed. A plan comes from a "FAULTS=a,b,c" marker in the messages, or (fault_rate > 0) is
drawn from a seeded RNG per key. Kinds: 429 (with Retry-After), 500, 503, timeout (sleeps past the
client's timeout), drop (closes the connection without a reply), 401 (marker only), 401echo / 400echo (marker only:
the error message repeats the key the client sent), html (a 200 that is not JSON),
garbage (a well-formed completion without any score: a paid reply the judge cannot read), trickle (a
200 whose body comes one byte per `trickle_s` seconds: only a total deadline per request ends it).

Given replies: `replies={"ITEM-<tag>": [text, ...]}` makes the k-th completion of that key the k-th
text (the last one repeats), so a test decides exactly what the judge reads. The response_format of
every request is kept in the stats (structured output).

Counts per key: hits (every request), served (completions with a score), garbage (completions
without one). A key is "ITEM-<tag>" when the messages carry such a tag, else a hash of the messages.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = ("429", "500", "503", "timeout", "drop", "html", "garbage")  # drawn by fault_rate; trickle by marker
_TAG = re.compile(r"ITEM-([\w.:-]+)")
_PLAN = re.compile(r"FAULTS=([\w,]+)")


def prompt_key(messages: list[dict]) -> str:
    text = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    m = _TAG.search(text)
    return f"ITEM-{m.group(1)}" if m else hashlib.sha256(text.encode()).hexdigest()[:16]


def expected_score(key: str) -> float:
    """The score the server gives a key: one of 0, 0.2, 0.4, 0.6, 0.8, 1 (exact in every format)."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 6 / 5


def render_score(key: str, value: float) -> str:
    """The reply text: the same score written one of several ways (chosen by the key)."""
    tenths = round(value * 10)
    formats = [
        f"得分: {value:g}",
        f"答案基本正确，但步骤不够完整。\n得分：{value:g}",
        f"The answer addresses the question.\nScore: {value:g}",
        f"{value:g}/1",
        f"{tenths * 10}%",
        f"{tenths}/10",
        f"I would give it a score {round(value * 5)} out of 5.",
        f"{value:g}",
        f"**Score:** {value:g}",
    ]
    return formats[int(hashlib.md5(key.encode()).hexdigest(), 16) % len(formats)]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits = defaultdict(int)
        self.served = defaultdict(int)
        self.garbage = defaultdict(int)
        self.faults = defaultdict(list)
        self.times = defaultdict(list)  # arrival times per key
        self.arrivals: list[float] = []  # time.time() of every request
        self.auth_headers: set[str] = set()
        self.response_formats: list = []  # response_format of every request (None when absent)

    def as_dict(self) -> dict:
        with self.lock:
            return {"hits": dict(self.hits), "served": dict(self.served), "garbage": dict(self.garbage),
                    "faults": {k: list(v) for k, v in self.faults.items()},
                    "times": {k: list(v) for k, v in self.times.items()}, "arrivals": list(self.arrivals),
                    "auth_headers": sorted(self.auth_headers), "response_formats": list(self.response_formats)}


class FakeJudgeServer:
    """Start with .start() (a thread) or as a context manager; .base_url for the openai client."""

    def __init__(self, latency_s: float = 0.0, fault_rate: float = 0.0, seed: int = 0,
                 retry_after_s: float | str = 0.2, timeout_sleep_s: float = 3.0, max_faults: int = 2,
                 replies: dict[str, list[str]] | None = None, trickle_s: float = 1.0):
        self.latency_s, self.fault_rate, self.seed = latency_s, fault_rate, seed
        self.replies, self.trickle_s = replies or {}, trickle_s
        self.retry_after_s, self.timeout_sleep_s, self.max_faults = retry_after_s, timeout_sleep_s, max_faults
        self.stats = Stats()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeJudgeServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def plan(self, key: str, text: str) -> list[str]:
        m = _PLAN.search(text)
        if m:  # "FAULTS=,garbage": an empty entry is a normal reply
            return m.group(1).split(",")
        if self.fault_rate <= 0:
            return []
        rng = random.Random(f"{self.seed}:{key}")
        faults = []
        while len(faults) < self.max_faults and rng.random() < self.fault_rate:
            faults.append(rng.choice(FAULT_KINDS))
        return faults

    def content_for(self, key: str, served_before: int) -> str:
        """The text of a successful completion: a given reply, else the key's score in some format."""
        given = self.replies.get(key)
        if given:
            return given[min(served_before, len(given) - 1)]
        return render_score(key, expected_score(key))

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, ctype="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout fault)

            def _trickle(self):
                body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Score: 1"}}],
                                   "object": "chat.completion", "id": "slow", "created": 0, "model": "judge"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(body)):  # every read gets a byte in time; the whole never arrives
                    try:
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return  # the client gave up: what the test wants
                    time.sleep(server.trickle_s)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, json.dumps(server.stats.as_dict()).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                messages = body.get("messages", [])
                key = prompt_key(messages)
                text = json.dumps(messages, ensure_ascii=False)
                st = server.stats
                with st.lock:
                    now = time.time()
                    st.arrivals.append(now)
                    st.times[key].append(now)
                    st.auth_headers.add(self.headers.get("Authorization", ""))
                    st.hits[key] += 1
                    hit = st.hits[key]
                    st.response_formats.append(body.get("response_format"))
                plan = server.plan(key, text)
                fault = plan[hit - 1] if hit <= len(plan) else None
                if fault:
                    with st.lock:
                        st.faults[key].append(fault)
                if server.latency_s:
                    time.sleep(server.latency_s)
                if fault == "429":
                    after = server.retry_after_s
                    return self._send(429, b'{"error": {"message": "rate limited", "type": "requests"}}',
                                      headers={"Retry-After": after if isinstance(after, str) else f"{after:g}"})
                if fault == "trickle":
                    return self._trickle()
                if fault == "401":  # only by marker: a bad key fails every request
                    return self._send(401, b'{"error": {"message": "invalid api key", "type": "auth"}}')
                if fault in ("401echo", "400echo"):  # marker only: an endpoint that echoes the key it got
                    sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    message = json.dumps({"error": {"message": f"Incorrect API key provided: {sent}", "type": "auth"}})
                    return self._send(int(fault[:3]), message.encode())
                if fault in ("500", "503"):
                    return self._send(int(fault), b'{"error": {"message": "server error"}}')
                if fault == "timeout":
                    time.sleep(server.timeout_sleep_s)
                    return self._send(500, b'{"error": {"message": "too late"}}')
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "html":
                    return self._send(200, b"<html><body>Bad gateway</body></html>", ctype="text/html")
                if fault == "garbage":
                    content = "I am not able to decide on this one."
                    with st.lock:
                        st.garbage[key] += 1
                else:
                    with st.lock:
                        content = server.content_for(key, st.served[key])
                        st.served[key] += 1
                prompt_tokens = max(1, len(text) // 3)
                reply = {"id": f"chatcmpl-{key}-{hit}", "object": "chat.completion", "created": int(time.time()),
                         "model": body.get("model", "judge"),
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 10,
                                   "total_tokens": prompt_tokens + 10}}
                self._send(200, json.dumps(reply, ensure_ascii=False).encode())

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible test server")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = FakeJudgeServer(latency_s=args.latency_ms / 1000, fault_rate=args.fault_rate, seed=args.seed)
    print(f"PORT {server.port}", flush=True)
    server.httpd.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
