"""Method ``llm`` against a scripted local OpenAI-compatible server (stdlib http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from landuse.config import Config, ConfigError, LlmConfig, MlflowConfig, ZeroShotConfig
from landuse.zeroshot.base import RegionPrompts, method
from landuse.zeroshot.llm import (
    DatabricksTransport,
    HttpTransport,
    LlmZeroShot,
    MalformedAnswer,
    parse_answer,
)

CLASSES = ["Residential", "Commercial", "Industrial"]
TOKEN = "sk-secret-token-123"


class Script:
    """Per prompt, the server's answers in order (the last one repeats); records every request."""

    def __init__(self) -> None:
        self.plans: dict[str, list[dict[str, Any]]] = {}
        self.seen: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def next(self, prompt: str) -> dict[str, Any]:
        with self.lock:
            plan = self.plans[prompt]
            step = plan[min(self.seen[prompt], len(plan) - 1)]
            self.seen[prompt] += 1
            return step


def ok(content: str, prompt_tokens: int = 10, completion_tokens: int = 3, **extra: Any) -> dict[str, Any]:
    return {"status": 200, "content": content, "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": completion_tokens}, **extra}


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
                step = script.next(prompt)
                time.sleep(step.get("sleep", 0.0))
                if step["status"] != 200:
                    payload = json.dumps({"error": {"message": f"scripted {step['status']}"}}).encode()
                    self.send_response(step["status"])
                    for key, value in step.get("headers", {}).items():
                        self.send_header(key, value)
                else:
                    payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                          "choices": [{"index": 0, "message": {"role": "assistant",
                                                                               "content": step["content"]}}],
                                          "usage": step["usage"]}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass
            finally:
                with script.lock:
                    script.in_flight -= 1

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LANDUSE_LLM_URL", "LANDUSE_LLM_MODEL", "LANDUSE_LLM_TOKEN", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)


def config(tmp_path: Path, **llm: Any) -> Config:
    settings = {"model": "tiny-chat", "timeout_s": 5.0, "max_retries": 2, "requests_per_minute": 60000.0,
                "concurrency": 4, "price_per_1k_input": 0.5, "price_per_1k_output": 2.0, **llm}
    return Config(name="zs", work_dir=tmp_path, zeroshot=ZeroShotConfig(method="llm", llm=LlmConfig(**settings)))


def region_prompts(names: list[str]) -> RegionPrompts:
    return RegionPrompts(region_ids=np.arange(100, 100 + len(names), dtype=np.int64), paragraphs=names,
                         prompts=names, classes=list(CLASSES), class_texts=[f"an area dominated by {c}" for c in CLASSES])


def fast(cfg: Config) -> LlmZeroShot:
    scorer = method("llm", cfg)
    assert isinstance(scorer, LlmZeroShot)
    scorer.backoff_s = 0.01
    return scorer


# --------------------------------------------------------------------------------------------


def test_parse_answer_contract() -> None:
    assert parse_answer('{"class": "commercial"}', CLASSES, False) == ("Commercial", None)
    assert parse_answer('```json\n{"class": "Industrial"}\n```', CLASSES, False)[0] == "Industrial"
    label, dist = parse_answer('{"class": "Residential", "distribution": {"residential": 0.62, "Commercial": 0.3, '
                               '"Industrial": 0.1}}', CLASSES, True)
    assert label == "Residential" and dist is not None
    np.testing.assert_allclose(dist, np.array([0.62, 0.3, 0.1]) / 1.02)
    for bad, with_dist in [("Residential", False), ('Sure: {"class": "Residential"}', False), ("[1]", False),
                           ('{"class": "Park"}', False), ('{"class": "Residential", "why": "x"}', False),
                           ('{"class": "Residential"}', True),
                           ('{"class": "Residential", "distribution": {"Residential": 0.5, "Commercial": 0.1, "Industrial": 0.1}}', True),
                           ('{"class": "Residential", "distribution": {"Residential": 1.0, "Commercial": 0.0}}', True),
                           ('{"class": "Residential", "distribution": {"Residential": 1.2, "Commercial": -0.2, "Industrial": 0}}', True),
                           ('{"class": "Residential", "distribution": {"Residential": 1, "Park": 0, "Industrial": 0}}', True),
                           ('{"class": "Residential", "distribution": {"Residential": NaN, "Commercial": 0, "Industrial": 1}}', True)]:
        with pytest.raises(MalformedAnswer):
            parse_answer(bad, CLASSES, with_dist)


def test_scripted_server_rejects_retries_usage_and_cache(tmp_path: Path, server: tuple[str, Script],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.setenv("LANDUSE_LLM_TOKEN", TOKEN)
    monkeypatch.setenv("LANDUSE_LLM_URL", url)  # url from the environment, model from the config
    script.plans = {
        "valid": [ok('{"class": "residential"}')],
        "fenced": [ok('```json\n{"class": "Commercial"}\n```')],
        "malformed-then-valid": [ok("It is probably industrial."), ok('{"class": "Industrial"}')],
        "malformed-twice": [ok("Residential, I think."), ok("x" * 3000)],
        "slow": [{"status": 200, "sleep": 3.0, **ok('{"class": "Residential"}')}],
        "429-then-ok": [{"status": 429, "headers": {"Retry-After": "1"}}, ok('{"class": "Commercial"}')],
        "500-then-ok": [{"status": 500}, ok('{"class": "Industrial"}')],
    }
    names = list(script.plans)
    cfg = config(tmp_path, timeout_s=1.0, max_retries=1)  # generous for a loaded machine, well below 3 s
    started = time.monotonic()
    out = fast(cfg).score(region_prompts(names))
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 honoured

    row = {name: i for i, name in enumerate(names)}
    assert out.probs.shape == (7, 3)
    expected = {"valid": 0, "fenced": 1, "malformed-then-valid": 2, "429-then-ok": 1, "500-then-ok": 2}
    for name, k in expected.items():
        assert out.scored[row[name]]
        np.testing.assert_array_equal(out.probs[row[name]], np.eye(3)[k])
    assert not out.scored[row["slow"]] and not out.scored[row["malformed-twice"]]
    assert np.all(out.probs[~out.scored] == 0)
    rejects = out.rejects.set_index("region_id")
    bad = rejects.loc[100 + row["malformed-twice"]]
    assert bad["reason"] == "malformed_answer" and bad["raw"] == "x" * 2000
    assert rejects.loc[100 + row["slow"], "reason"] == "timeout"

    # requests on the server: 1 each for valid/fenced, 2 for each retried one, 2 for slow (1 + 1 retry)
    per_prompt = Counter(next(m["content"] for m in r["body"]["messages"] if m["role"] == "user") for r in script.requests)
    assert per_prompt == {"valid": 1, "fenced": 1, "malformed-then-valid": 2, "malformed-twice": 2, "slow": 2,
                          "429-then-ok": 2, "500-then-ok": 2}
    first = script.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {TOKEN}"
    assert first["body"]["temperature"] == 0 and first["body"]["model"] == "tiny-chat"
    assert first["body"]["messages"][0]["role"] == "system" and "JSON" in first["body"]["messages"][0]["content"]
    reminder = next(r for r in script.requests if len(r["body"]["messages"]) == 4)["body"]["messages"]
    assert reminder[2]["role"] == "assistant" and "not valid" in reminder[3]["content"]

    usage = out.usage
    answered = 1 + 1 + 2 + 2 + 1 + 1  # 200 answers that arrived (the slow ones never did)
    assert usage["requests"] == len(script.requests) == 12
    assert usage["retries"] == 3 and usage["malformed_retries"] == 2 and usage["cache_hits"] == 0
    assert usage["prompt_tokens"] == 10 * answered and usage["completion_tokens"] == 3 * answered
    assert usage["cost"] == pytest.approx(10 * answered / 1000 * 0.5 + 3 * answered / 1000 * 2.0)
    assert usage["rejects"] == {"malformed_answer": 1, "timeout": 1}
    assert usage["model"] == "tiny-chat" and usage["url"] == url and usage["scored"] == 5
    assert TOKEN not in json.dumps(usage) and TOKEN not in out.rejects.to_json()  # also: usage is JSON

    # rerun: the model's answers (valid and malformed) come from the cache, nothing is sent
    script.requests.clear()
    answered_names = [n for n in names if n != "slow"]
    again = fast(cfg).score(region_prompts(answered_names))
    assert script.requests == [] and again.usage["requests"] == 0
    assert again.usage["cache_hits"] == 6 and again.usage["prompt_tokens"] == 0 and again.usage["cost"] == 0
    np.testing.assert_array_equal(again.probs, out.probs[[row[n] for n in answered_names]])
    assert again.rejects["reason"].tolist() == ["malformed_answer"]
    # a transport failure is not cached: the slow prompt is asked again
    fast(cfg).score(region_prompts(["slow"]))
    assert len(script.requests) == 2
    assert (tmp_path / "cache" / "llm" / "answers.jsonl").is_file()


def test_distribution_answers(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    good = {"Residential": 0.2, "Commercial": 0.7, "Industrial": 0.11}
    script.plans = {
        "a": [ok(json.dumps({"class": "Commercial", "distribution": good}))],
        "b": [ok(json.dumps({"class": "Commercial", "distribution": {"Residential": 0.5, "Commercial": 0.1,
                                                                     "Industrial": 0.1}})),
              ok(json.dumps({"class": "Residential", "distribution": {"Residential": 1, "Commercial": 0,
                                                                      "Industrial": 0}}))],
        "c": [ok('{"class": "Commercial"}')],  # no distribution although asked: malformed twice
    }
    out = fast(config(tmp_path, url=url, distribution=True)).score(region_prompts(["a", "b", "c"]))
    np.testing.assert_allclose(out.probs[0], np.array([0.2, 0.7, 0.11]) / 1.01)
    np.testing.assert_allclose(out.probs.sum(1), [1, 1, 0])
    np.testing.assert_array_equal(out.probs[1], [1, 0, 0])
    assert out.scored.tolist() == [True, True, False]
    assert out.rejects["reason"].tolist() == ["malformed_answer"] and out.usage["distribution"] is True
    assert "distribution" in script.requests[0]["body"]["messages"][0]["content"]
    assert out.usage["malformed_retries"] == 2 and out.usage["requests"] == 5


def test_bad_token_is_a_config_error(tmp_path: Path, server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    script.plans = {f"p{i}": [{"status": 401}] for i in range(6)}
    with pytest.raises(ConfigError, match=r"HTTP 401.*\$MY_TOKEN") as info:
        fast(config(tmp_path, url=url, token_env="MY_TOKEN", concurrency=1)).score(region_prompts(list(script.plans)))
    assert "\n" not in str(info.value) and TOKEN not in str(info.value)
    assert len(script.requests) == 1  # not retried, the rest never sent
    script.plans = {"p": [{"status": 403}]}
    with pytest.raises(ConfigError, match="HTTP 403"):
        fast(config(tmp_path, url=url)).score(region_prompts(["p"]))


def test_final_5xx_is_a_reject_and_other_4xx_not_retried(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    script.plans = {"down": [{"status": 503}], "bad": [{"status": 400}]}
    out = fast(config(tmp_path, url=url, max_retries=2)).score(region_prompts(["down", "bad"]))
    assert out.rejects["reason"].tolist() == ["http_503", "http_400"]
    assert script.seen == {"down": 3, "bad": 1} and out.usage["retries"] == 2


def test_rate_limit_and_concurrency(tmp_path: Path, server: tuple[str, Script]) -> None:
    url, script = server
    script.plans = {f"p{i}": [{"status": 200, "sleep": 0.15, **ok('{"class": "Industrial"}')}] for i in range(6)}
    cfg = config(tmp_path, url=url, concurrency=2, requests_per_minute=600.0)  # one start per 0.1 s
    started = time.monotonic()
    out = fast(cfg).score(region_prompts(list(script.plans)))
    assert out.scored.all() and time.monotonic() - started >= 0.5
    assert script.max_in_flight <= 2


def test_missing_url_or_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="zeroshot.llm.url: not set.*LANDUSE_LLM_URL"):
        method("llm", config(tmp_path))
    with pytest.raises(ConfigError, match="zeroshot.llm.model: not set.*LANDUSE_LLM_MODEL"):
        method("llm", config(tmp_path, url="http://127.0.0.1:9/v1", model=None))
    monkeypatch.setenv("LANDUSE_LLM_MODEL", "env-model")
    scorer = method("llm", config(tmp_path, url="http://user:pw@127.0.0.1:9/v1?key=abc", model=None))
    assert isinstance(scorer, LlmZeroShot) and scorer.model == "env-model"
    assert isinstance(scorer.transport, HttpTransport) and scorer.transport.label == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigError, match="not an http"):
        method("llm", config(tmp_path, url="ftp://example"))


class FakeHTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"scripted {status}")
        self.response = type("R", (), {"status_code": status, "headers": {"Retry-After": "0"}})()


class FakeDeployClient:
    """``mlflow.deployments`` client stand-in: answers like a Databricks chat endpoint."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers, self.calls = answers, []

    def predict(self, deployment_name: Any = None, inputs: Any = None, endpoint: Any = None) -> dict[str, Any]:
        self.calls.append({"endpoint": endpoint, "inputs": inputs})
        answer = self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return {"choices": [{"message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2}}


@pytest.mark.parametrize("via", ["url", "tracking_uri"])
def test_databricks_path_with_fake_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str) -> None:
    import mlflow.deployments

    fake = FakeDeployClient([FakeHTTPError(429), '{"class": "Commercial"}'])
    targets: list[str] = []
    monkeypatch.setattr(mlflow.deployments, "get_deploy_client", lambda target: targets.append(target) or fake)
    cfg = config(tmp_path, url="databricks" if via == "url" else None, model="my-endpoint")
    if via == "tracking_uri":
        cfg = Config(name="zs", work_dir=tmp_path, zeroshot=cfg.zeroshot, mlflow=MlflowConfig(tracking_uri="databricks"))
    scorer = fast(cfg)
    assert isinstance(scorer.transport, DatabricksTransport) and targets == ["databricks"]
    out = scorer.score(region_prompts(["p"]))
    np.testing.assert_array_equal(out.probs, [[0, 1, 0]])
    assert [c["endpoint"] for c in fake.calls] == ["my-endpoint"] * 2
    assert fake.calls[0]["inputs"]["messages"][1] == {"role": "user", "content": "p"}
    assert fake.calls[0]["inputs"]["temperature"] == 0
    assert out.usage["url"] == "databricks" and out.usage["retries"] == 1 and out.usage["prompt_tokens"] == 7

    fake401 = FakeDeployClient([FakeHTTPError(401)])
    monkeypatch.setattr(mlflow.deployments, "get_deploy_client", lambda target: fake401)
    with pytest.raises(ConfigError, match="401"):
        fast(cfg).score(region_prompts(["q"]))


def test_regions_without_pois_are_rejected_without_a_request(tmp_path: Path, server: tuple[str, Script]) -> None:
    from landuse.zeroshot.prompts import config_template

    url, script = server
    cfg = config(tmp_path, url=url)
    empty = config_template(cfg).zero_pois
    script.plans = {"a": [ok('{"class": "Industrial"}')]}
    out = fast(cfg).score(region_prompts(["a", empty]))
    assert out.scored.tolist() == [True, False] and out.rejects["reason"].tolist() == ["no_pois"]
    assert out.usage["requests"] == 1 and len(script.requests) == 1
