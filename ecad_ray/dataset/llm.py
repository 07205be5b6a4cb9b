"""A small client for any OpenAI-compatible chat-completions endpoint (`POST {endpoint}/chat/completions`).

The LLM prompt strategies (metaprompt, synclr, synthclip) ask one question per request. What a
long run needs from the client is here: a rate limit shared by the threads of one worker, retries
with exponential backoff for what can pass (connection errors, timeouts, 429 and 5xx answers,
empty answers), an immediate one-line failure for what cannot (401/403/404 and other 4xx), and the
API key read from the environment only (`ECAD_RAY_LLM_API_KEY`, else `OPENAI_API_KEY`), never from
a file or a command line. Standard library only: no SDK to install on every Ray worker.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ecad_ray.errors import UserError

API_KEY_ENVS = ("ECAD_RAY_LLM_API_KEY", "OPENAI_API_KEY")
SYSTEM_MESSAGE = "You are a helpful assistant."  # as nameonly's requests
_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LlmError(UserError):
    """The endpoint failed for good (down, refusing, or answering nonsense after every retry)."""


@dataclass(frozen=True)
class LlmSettings:
    """Where and how fast to ask: the endpoint's base URL (`http://host:8000/v1`), the model name,
    requests per second over the whole run (`rate`, split across workers), and how long to keep
    trying one request (`retries` after the first try, the first wait `backoff_s`, doubling)."""

    endpoint: str
    model: str
    rate: float = 2.0
    retries: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise UserError(f"--llm-endpoint {self.endpoint!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
        if not self.model:
            raise UserError("--llm-model: give the model name the endpoint serves")
        if self.rate <= 0:
            raise UserError(f"--llm-rate {self.rate}: must be positive (requests per second)")
        if self.retries < 0:
            raise UserError(f"--llm-retries {self.retries}: must be 0 or more")

    @property
    def url(self) -> str:
        return self.endpoint.rstrip("/") + "/chat/completions"


class RateLimiter:
    """At most `rate` request starts per second across the threads that share it."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Retry(Exception):
    """A failure worth another try; `wait_s` is the server's Retry-After when it sent one."""

    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.wait_s = wait_s


class LlmClient:
    """Ask the endpoint one chat question at a time, thread-safely, within the rate limit."""

    def __init__(self, settings: LlmSettings, limiter: RateLimiter | None = None):
        self.settings = settings
        self.limiter = limiter or RateLimiter(settings.rate)  # share one to share a rate
        self.api_key = next((os.environ[k] for k in API_KEY_ENVS if os.environ.get(k)), None)
        self.requests = 0  # sent, retries included (for reports and tests)

    def ask(self, user_message: str) -> str:
        """The model's answer to one user message (after nameonly's system message)."""
        messages = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user_message}]
        return self.chat(messages)

    def chat(self, messages: list[dict]) -> str:
        """The answer's text; retries what can pass, raises `LlmError` naming the endpoint otherwise."""
        s = self.settings
        wait = s.backoff_s
        for attempt in range(s.retries + 1):
            try:
                return self._post(messages)
            except _Retry as err:
                if attempt == s.retries:
                    tries = f"{s.retries + 1} tries" if s.retries else "1 try"
                    raise LlmError(f"--llm-endpoint {s.endpoint}: {err} (after {tries})") from None
                time.sleep(min(err.wait_s, 60.0) if err.wait_s is not None else wait)
                wait *= 2
        raise AssertionError("unreachable")

    def _post(self, messages: list[dict]) -> str:
        s = self.settings
        body = json.dumps({"model": s.model, "messages": messages}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(s.url, data=body, headers=headers, method="POST")
        self.limiter.wait()
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = _error_detail(err)
            if err.code in _RETRYABLE_STATUS:
                raise _Retry(f"HTTP {err.code}{detail}", _retry_after(err)) from None
            hint = f"; set {API_KEY_ENVS[0]} (or {API_KEY_ENVS[1]})" if err.code in (401, 403) else ""
            raise LlmError(f"--llm-endpoint {s.endpoint}: HTTP {err.code}{detail}{hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise _Retry(f"cannot reach {s.url} ({reason})") from None
        return _answer_text(payload)


def _answer_text(payload: bytes) -> str:
    """`choices[0].message.content` of a chat-completions answer, stripped; an empty or malformed
    answer is retried (a server under load sometimes sends one)."""
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retry(f"answer is not a chat completion: {payload[:80]!r}") from None
    text = (content or "").strip()
    if not text:
        raise _Retry("empty answer")
    return text


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read(200).decode("utf-8", "replace").strip().splitlines()
    except Exception:  # noqa: BLE001  (the status alone still says what happened)
        return ""
    return f": {text[0][:120]}" if text else ""


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    value = err.headers.get("Retry-After") if err.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
