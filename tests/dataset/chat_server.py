"""A loopback server that speaks the chat-completions API, for the LLM prompt strategies' tests.

It answers `POST /v1/chat/completions` with a short deterministic text, counts what it was asked,
and can fail on purpose: the first `fail_first` requests get HTTP 500, and any request whose
user message contains `fail_text` gets HTTP 503 every time (an endpoint that keeps failing for
one class). It binds 127.0.0.1 only and stops with the test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """Start on a free loopback port; `url` is the base URL to pass as --llm-endpoint."""

    def __init__(self, fail_first: int = 0, fail_text: str | None = None, status: int = 500):
        self.fail_first = fail_first
        self.fail_text = fail_text
        self.status = status
        self.messages: list[str] = []  # user message of every request, failed ones included
        self.auth: list[str | None] = []
        self.models: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                with server._lock:
                    server.messages.append(user)
                    server.auth.append(self.headers.get("Authorization"))
                    server.models.append(body["model"])
                    n = len(server.messages)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no such route"})
                if n <= server.fail_first:
                    return self._send(server.status, {"error": "overloaded"})
                if server.fail_text and server.fail_text in user:
                    return self._send(503, {"error": "unavailable"})
                answer = f"prompt: answer {n} about {user.splitlines()[-1][-40:]}"
                self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def asked_about(self, text: str) -> int:
        """How many requests mentioned `text` (a class's description)."""
        with self._lock:
            return sum(text in m for m in self.messages)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (an endpoint that is down)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
