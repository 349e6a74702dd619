"""The served judge's one door: an HTTP proxy on all interfaces of the server's node that lets through
only what the judge needs, only with the study's bearer token, to the engine on 127.0.0.1.

    POST /v1/chat/completions   Authorization: Bearer <token>   -> the engine (its model name written in)
    GET  /v1/models             Authorization: Bearer <token>   -> this judge's name
    GET  /health                                                 -> {"status": "ok"} while the engine answers

Everything else is 404 (the engines have endpoints no judge needs: transformers serve's /load_model and
/reset, vLLM's /pause, /tokenize, ..., some without any key check). A wrong or missing token is 401,
which the judge treats as fatal. The proxy counts requests and knows when the last one arrived and how
many are in flight, which decides when an idle server may end (launch.judge_server). It logs a line per
request without any header, so the token never reaches a log.

Library module (no command): lorafull.judge.serve.server runs it.
"""
from __future__ import annotations

import hmac
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import urlparse

# a reply may take long on a busy engine; the judge's own deadline (eval.judge.timeout_s) decides
UPSTREAM_TIMEOUT_S = 3600.0
MAX_BODY_BYTES = 16 << 20


class Activity:
    """Requests seen: total, in flight, and when the last one started or ended (time.time())."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        self.in_flight = 0
        self.last = time.time()

    def begin(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.last = time.time()

    def end(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.last = time.time()

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "refused": self.refused, "in_flight": self.in_flight,
                    "last_request": self.last}


class JudgeProxy:
    def __init__(self, token: str, engine_url: str, engine_model: str, judge_name: str,
                 engine_token: Optional[str] = None, engine_healthy: Callable[[], bool] = lambda: True,
                 log: Callable[[str], None] = print, host: str = "0.0.0.0", port: int = 0):
        self.token, self.engine_token = token, engine_token
        self.engine = urlparse(engine_url)
        self.engine_model, self.judge_name = engine_model, judge_name
        self.engine_healthy, self.log = engine_healthy, log
        self.activity = Activity()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> "JudgeProxy":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="judge-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, header: Optional[str]) -> bool:
        given = (header or "").removeprefix("Bearer ").strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def forward(self, body: dict) -> tuple[int, bytes, str]:
        """The engine's answer to one chat completion: (status, body, content type)."""
        body["model"] = self.engine_model
        body.pop("stream", None)  # the judge reads whole replies
        headers = {"Content-Type": "application/json"}
        if self.engine_token:
            headers["Authorization"] = f"Bearer {self.engine_token}"
        conn = http.client.HTTPConnection(self.engine.hostname, self.engine.port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.request("POST", "/v1/chat/completions", json.dumps(body).encode(), headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200:  # the judge sees its own name, never the engine's path
                data = _renamed(data, self.judge_name)
            return resp.status, data, resp.getheader("Content-Type", "application/json")
        except OSError as e:
            return 502, _error(f"judge engine unreachable: {type(e).__name__}"), "application/json"
        finally:
            conn.close()

    def _refused(self, handler) -> bool:
        """True (and a 401 sent) unless the request carries the study's bearer token."""
        if self.authorized(handler.headers.get("Authorization")):
            return False
        with self.activity.lock:
            self.activity.refused += 1
        handler._send(401, _error("invalid bearer token for the study's judge server", "auth"))
        return True

    def get(self, handler) -> None:
        path = urlparse(handler.path).path.rstrip("/")
        if path == "/health":
            ok = self.engine_healthy()
            return handler._send(200 if ok else 503, json.dumps({"status": "ok" if ok else "engine down"}).encode())
        if path != "/v1/models":
            return handler._send(404, _error("not found"))
        if not self._refused(handler):
            handler._send(200, json.dumps({"object": "list", "data": [
                {"id": self.judge_name, "object": "model", "owned_by": "lorafull"}]}).encode())

    def post(self, handler) -> None:
        if urlparse(handler.path).path.rstrip("/") != "/v1/chat/completions":
            return handler._send(404, _error("not found"))
        if self._refused(handler):
            return
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return handler._send(413, _error("request too large"))
        try:
            body = json.loads(handler.rfile.read(length) or b"{}")
        except ValueError:
            return handler._send(400, _error("request body is not JSON"))
        self.activity.begin()
        t0 = time.monotonic()
        try:
            status, data, ctype = self.forward(body)
        finally:
            self.activity.end()
        self.log(f"[proxy] POST /v1/chat/completions {status} {time.monotonic() - t0:.1f}s")
        handler._send(status, data, ctype)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the default logs headers' effects; one line per request instead
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its deadline): nothing to tell it

            def do_GET(self):
                proxy.get(self)

            def do_POST(self):
                proxy.post(self)

        return Handler


def _error(message: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind}}).encode()


def _renamed(data: bytes, name: str) -> bytes:
    try:
        reply = json.loads(data)
    except ValueError:
        return data  # not JSON: the judge's client says so
    if isinstance(reply, dict):
        reply["model"] = name
    return json.dumps(reply, ensure_ascii=False).encode()
