"""LLM prompt strategies against a loopback chat-completions server: retries, rate, resume, failures."""

import json
import random
import time

import pytest
from chat_server import ChatServer, closed_port_url

from ecad_ray.dataset.classes import load_class_set
from ecad_ray.dataset.llm import LlmClient, LlmError, LlmSettings, RateLimiter
from ecad_ray.dataset.prompts import (
    SYNCLR_MODES, PromptJob, llm_entry, prompt_texts, synclr_request, write_prompt_file,
)
from ecad_ray.errors import UserError


def settings(url, **kw):
    return LlmSettings(url, "tiny-llm", **{"rate": 200.0, "retries": 2, "backoff_s": 0.01, **kw})


# ---- the client ----------------------------------------------------------------------------

def test_client_retries_a_failed_request_and_sends_the_key(monkeypatch):
    monkeypatch.setenv("ECAD_RAY_LLM_API_KEY", "sk-test")
    with ChatServer(fail_first=1) as server:
        client = LlmClient(settings(server.url))
        answer = client.ask("hello there")
    assert answer.startswith("prompt: answer 2")  # the first try got HTTP 500
    assert client.requests == 2 and server.messages == ["hello there"] * 2
    assert server.auth == ["Bearer sk-test"] * 2 and server.models == ["tiny-llm"] * 2


def test_client_sends_no_key_when_none_is_set(monkeypatch):
    for name in ("ECAD_RAY_LLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with ChatServer() as server:
        LlmClient(settings(server.url)).ask("hi")
    assert server.auth == [None]


def test_a_refused_request_fails_at_once_with_a_hint():
    with ChatServer(fail_first=5, status=401) as server:
        client = LlmClient(settings(server.url))
        with pytest.raises(LlmError) as err:
            client.ask("hi")
    assert client.requests == 1
    assert f"--llm-endpoint {server.url}: HTTP 401" in str(err.value) and "ECAD_RAY_LLM_API_KEY" in str(err.value)


def test_an_endpoint_that_is_down_names_itself_after_the_retries():
    url = closed_port_url()
    client = LlmClient(settings(url, retries=2))
    with pytest.raises(LlmError) as err:
        client.ask("hi")
    assert client.requests == 3
    assert str(err.value).startswith(f"--llm-endpoint {url}: cannot reach") and "after 3 tries" in str(err.value)


def test_rate_limiter_spaces_request_starts():
    limiter = RateLimiter(rate=50.0)
    start = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - start >= 5 / 50 - 1e-3  # 6 starts, 5 gaps of 20 ms at least


@pytest.mark.parametrize("kw,problem", [(dict(endpoint="127.0.0.1:8000"), "expected an http"),
                                        (dict(model=""), "--llm-model"), (dict(rate=0), "--llm-rate")])
def test_bad_llm_settings(kw, problem):
    with pytest.raises(UserError, match=problem):
        LlmSettings(**{"endpoint": "http://127.0.0.1:1/v1", "model": "m", **kw})


# ---- the strategies (a fake `ask`, no server) ----------------------------------------------

class FakeAsk:
    def __init__(self):
        self.messages = []

    def __call__(self, message):
        self.messages.append(message)
        return f"Sure!\nprompt: idea {len(self.messages)}"


def job(strategy, n):
    return PromptJob(strategy, n, seed=1, llm=LlmSettings("http://127.0.0.1:1/v1", "m"))


def test_metaprompt_is_two_stage_as_nameonly():
    ask = FakeAsk()
    entry = llm_entry(job("metaprompt", 50), "red circle", "red circle", ask)
    metaprompts = entry["metaprompts"]
    assert len(metaprompts) == 10 and [len(m["prompts"]) for m in metaprompts] == [5] * 10
    assert metaprompts[0]["metaprompt"] == "A photo of a red circle."
    assert metaprompts[1]["metaprompt"] == "idea 1"  # "prompt:" label stripped, first line skipped
    assert len(ask.messages) == 9 + 50
    # each request lists what came before, so the LLM does not repeat itself
    assert "prompt: idea 1" in ask.messages[1]
    second_group = ask.messages[9 + 5 + 1]
    assert "Rewrite 'idea 1'" in second_group and "prompt: idea 15" in second_group


def test_metaprompt_with_few_prompts_spreads_them():
    entry = llm_entry(job("metaprompt", 12), "dog", "dog", FakeAsk())
    assert [len(m["prompts"]) for m in entry["metaprompts"]] == [2, 2] + [1] * 8


def test_synclr_modes_follow_its_probabilities():
    rng = random.Random(0)
    heads = [synclr_request("dog", rng).splitlines()[0] for _ in range(4000)]
    shares = [sum(h.endswith(w) for h in heads) / len(heads) for w in ("category:", "relation:", "place:")]
    expected = [SYNCLR_MODES[0][0], SYNCLR_MODES[1][0] - SYNCLR_MODES[0][0], 1 - SYNCLR_MODES[1][0]]
    assert shares == pytest.approx(expected, abs=0.025)


def test_synthclip_asks_for_short_captions_one_per_request():
    ask = FakeAsk()
    entry = llm_entry(job("synthclip", 3), "n01440764", "tench, Tinca tinca", ask)
    assert len(ask.messages) == 3 and all("at most 15 words" in m and "tench, Tinca tinca" in m for m in ask.messages)
    assert prompt_texts(entry) == ["prompt: idea 1", "prompt: idea 2", "prompt: idea 3"]


def test_llm_requests_depend_on_seed_and_class_only():
    a, b = FakeAsk(), FakeAsk()
    llm_entry(job("synclr", 6), "dog", "dog", a)
    llm_entry(job("synclr", 6), "dog", "dog", b)
    assert a.messages == b.messages


# ---- on Ray: batched, resumable, failures kept to one line ---------------------------------

SIX = load_class_set("shapes").select("0:6")


def test_llm_prompts_on_ray_retry_and_write_every_class(ray_local, tmp_path):
    from actors.dataset_prompts import make_prompt_file

    out = tmp_path / "P.json"
    with ChatServer(fail_first=1) as server:
        summary = make_prompt_file(SIX, PromptJob("synthclip", 2, llm=settings(server.url)), out, num_workers=2)
        sent = len(server.messages)
    data = json.loads(out.read_text())
    assert list(data) == list(SIX.classes)
    assert all(len(prompt_texts(e)) == 2 for e in data.values())
    assert sent == 6 * 2 + 1 == summary.requests  # one retry
    assert (summary.written, summary.kept) == (6, 0)


def test_a_class_that_keeps_failing_is_named_and_the_rest_kept_then_resumed(ray_local, tmp_path):
    from actors.dataset_prompts import make_prompt_file

    out = tmp_path / "P.json"
    with ChatServer(fail_text="red triangle") as server:
        with pytest.raises(UserError) as err:
            make_prompt_file(SIX, PromptJob("synthclip", 2, llm=settings(server.url, retries=1)), out)
    line = str(err.value)
    assert f"--llm-endpoint {server.url}: HTTP 503" in line and "class 'red triangle'" in line and "\n" not in line
    kept = json.loads(out.read_text())
    assert "red triangle" not in kept and len(kept) == 5  # classes done beside it were written
    with ChatServer() as healthy:
        summary = make_prompt_file(SIX, PromptJob("synthclip", 2, llm=settings(healthy.url)), out)
        assert len(healthy.messages) == 2 == healthy.asked_about("red triangle")  # nothing asked twice
    again = json.loads(out.read_text())
    assert (summary.written, summary.kept) == (1, 5) and list(again) == list(SIX.classes)
    assert {k: again[k] for k in kept} == kept


def test_endpoint_down_loses_nothing(ray_local, tmp_path):
    from actors.dataset_prompts import make_prompt_file

    out = tmp_path / "P.json"
    before = {"red circle": {"metaprompts": [{"index": 0, "metaprompt": "dummy", "prompts": [{"index": 0, "content": "x"}]}]}}
    write_prompt_file(out, before)
    url = closed_port_url()
    with pytest.raises(UserError) as err:
        make_prompt_file(SIX, PromptJob("synclr", 2, llm=settings(url, retries=0)), out)
    assert str(err.value).startswith(f"--llm-endpoint {url}: cannot reach") and "class '" in str(err.value)
    assert "1 of 6 classes are in" in str(err.value)
    assert json.loads(out.read_text()) == before
