"""Method ``llm``: ask the user's chat model for each region's primary land use.

Each region's prompt (instruction + POI paragraph + question) is sent as the user message of an
OpenAI-compatible ``POST {url}/chat/completions`` (temperature 0) after a system message that fixes
the answer contract: one JSON object ``{"class": "<one of the classes>"}``, or with
``zeroshot.llm.distribution`` ``{"class": ..., "distribution": {"<class>": p, ...}}``. The answer is
parsed strictly (:func:`parse_answer`); a malformed one is asked again once with a reminder, then
becomes a reject row (``malformed_answer``, the raw answer kept). Without a distribution the class
gets probability 1.

Endpoint: ``zeroshot.llm.url`` / ``LANDUSE_LLM_URL`` and ``zeroshot.llm.model`` /
``LANDUSE_LLM_MODEL``; the token is read from the variable named by ``zeroshot.llm.token_env`` and
never logged (it is redacted from every message). With the url ``databricks`` (or none and an MLflow
tracking URI ``databricks``) the same requests go to a Databricks serving endpoint through
``mlflow.deployments`` (its own Databricks authentication), see :class:`DatabricksTransport`.

Requests: ``concurrency`` in flight (a thread pool), at most ``requests_per_minute`` started, each
with ``timeout_s``; timeouts, connection errors, HTTP 429 and 5xx are retried ``max_retries`` times
with exponential backoff (``Retry-After`` honoured); a final failure is a reject row (``timeout``,
``connection_error``, ``http_<code>``), HTTP 401/403 a :class:`ConfigError` at once. The model's
answers (valid or malformed — temperature 0 makes them repeatable) are cached in a JSON-lines file
under ``<driver_dir>/cache/llm`` keyed by the sha256 of (url, model, system message, prompt,
distribution flag): a rerun sends nothing for them; transport failures are not cached, so a rerun
asks again. ``usage`` (for the manifest) counts requests, retries, cache hits, tokens, cost and
rejects by reason.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from landuse.config import Config, ConfigError, LlmConfig
from landuse.zeroshot.base import (
    REJECT_COLUMNS,
    RegionPrompts,
    ZeroShotMethod,
    ZeroShotOutput,
    register,
)

log = logging.getLogger(__name__)

ENV_URL, ENV_MODEL = "LANDUSE_LLM_URL", "LANDUSE_LLM_MODEL"
DATABRICKS = "databricks"
RAW_LIMIT = 2000  # characters of a raw answer kept in a reject row
SUM_TOLERANCE = 0.05  # a distribution summing to 1 ± this is renormalised, otherwise malformed
BACKOFF_CAP_S = 120.0  # longest wait between two tries (Retry-After included)
_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL | re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# The answer contract
# --------------------------------------------------------------------------------------------


class MalformedAnswer(ValueError):
    """An answer that breaks the JSON contract; the message says how (it is quoted to the model)."""


def system_message(classes: list[str], distribution: bool) -> str:
    """The system message fixing the JSON answer contract for ``classes``."""
    names = ", ".join(json.dumps(c, ensure_ascii=False) for c in classes)
    if distribution:
        shape = ('{"class": "<one of the classes>", "distribution": {"<class>": <probability>, ...}}, where '
                 "the distribution has exactly one entry per class, probabilities >= 0 that sum to 1")
    else:
        shape = '{"class": "<one of the classes>"}'
    return ("You classify the primary land use of an urban region from a description of its points of interest. "
            f"The classes are: {names}. Answer with exactly one JSON object and nothing else (no explanation, "
            f"no other keys): {shape}. Spell class names exactly as given.")


def reminder_message(problem: str, classes: list[str], distribution: bool) -> str:
    """The follow-up user message after a malformed answer."""
    keys = '"class" and "distribution"' if distribution else '"class"'
    return (f"Your answer was not valid ({problem}). Reply again with only the JSON object with the key(s) {keys}, "
            f"the class being one of: {', '.join(classes)}.")


def parse_answer(text: str, classes: list[str], distribution: bool) -> tuple[str, np.ndarray | None]:
    """(canonical class, distribution [C] summing to 1 or None) from an answer, else MalformedAnswer.

    The answer must be one JSON object, bare or in a single ```json fence; the class must name one of
    ``classes`` (case-insensitively); with ``distribution`` the object must also map exactly the
    classes to finite values >= 0 whose sum is within 1 ± 0.05 (then renormalised).
    """
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError:
        raise MalformedAnswer("not a JSON object") from None
    if not isinstance(value, dict):
        raise MalformedAnswer("not a JSON object")
    allowed = {"class", "distribution"} if distribution else {"class"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise MalformedAnswer(f"unexpected key {extra[0]!r}")
    canonical = {c.casefold(): c for c in classes}
    label = value.get("class")
    if not isinstance(label, str) or label.casefold() not in canonical:
        raise MalformedAnswer(f"class {label!r} is not one of the classes")
    if not distribution:
        return canonical[label.casefold()], None
    dist = value.get("distribution")
    if not isinstance(dist, dict):
        raise MalformedAnswer("no distribution object")
    probs = np.zeros(len(classes), dtype=np.float64)
    seen: set[str] = set()
    index = {c: i for i, c in enumerate(classes)}
    for key, p in dist.items():
        name = canonical.get(key.casefold()) if isinstance(key, str) else None
        if name is None or name in seen:
            raise MalformedAnswer(f"distribution key {key!r} is not a class (or repeats one)")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise MalformedAnswer(f"distribution value {p!r} for {key!r} is not a number >= 0")
        seen.add(name)
        probs[index[name]] = float(p)
    if len(seen) != len(classes):
        missing = next(c for c in classes if c not in seen)
        raise MalformedAnswer(f"distribution lacks class {missing!r}")
    total = float(probs.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise MalformedAnswer(f"distribution sums to {total:.4g}, not 1")
    return canonical[label.casefold()], probs / total


# --------------------------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One chat completion: the answer text and its token counts (0 when the server reports none)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TransportError(Exception):
    """A failed request: ``reason`` is the reject reason (``timeout``, ``http_503``, ...)."""

    def __init__(self, reason: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason, self.retryable, self.retry_after = reason, retryable, retry_after


class Transport(Protocol):
    """Sends one chat conversation and returns the reply (raises TransportError or ConfigError)."""

    label: str  # where requests go, without credentials (usage, logs)

    def send(self, messages: list[dict[str, str]]) -> Reply:
        """The model's reply to ``messages``."""


def reply_from_json(payload: Any) -> Reply:
    """A :class:`Reply` from an OpenAI-style chat-completion body (a malformed body becomes its text)."""
    try:
        text = payload["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        # not the chat-completions shape: hand the body on as the answer, the parser rejects it
        return Reply(text=json.dumps(payload, default=str)[:RAW_LIMIT])
    usage = payload.get("usage") if isinstance(payload, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    return Reply(text=text, prompt_tokens=_int(usage.get("prompt_tokens")),
                 completion_tokens=_int(usage.get("completion_tokens")))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP date) as seconds from now, or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def public_url(url: str) -> str:
    """``url`` without user info and query (where credentials hide), for logs and the manifest."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _status_error(code: int, message: str, retry_after: float | None, token_env: str, where: str) -> Exception:
    if code in (401, 403):
        return ConfigError(f"{where}: HTTP {code}: the endpoint refused the credentials (set ${token_env} to a valid API token)")
    return TransportError(f"http_{code}", message, retryable=code == 429 or code >= 500, retry_after=retry_after)


class HttpTransport:
    """OpenAI-compatible ``POST {url}/chat/completions`` with ``requests`` (one session per thread)."""

    def __init__(self, url: str, model: str, cfg: LlmConfig, token: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"zeroshot.llm.url: {public_url(url)!r} is not an http(s) URL (or `databricks`)")
        path = parts.path.rstrip("/") + "/chat/completions"
        self.endpoint = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self.label = public_url(url)
        self.model, self.cfg, self._token = model, cfg, token
        self._local = threading.local()

    def _session(self) -> Any:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send(self, messages: list[dict[str, str]]) -> Reply:
        """POST one chat completion; errors become TransportError / ConfigError."""
        import requests

        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.cfg.max_tokens}
        try:
            response = self._session().post(self.endpoint, json=body, headers=headers, timeout=self.cfg.timeout_s)
        except requests.Timeout:
            raise TransportError("timeout", f"no answer within {self.cfg.timeout_s:g} s", retryable=True) from None
        except requests.ConnectionError as exc:
            raise TransportError("connection_error", f"cannot connect to {self.label}: {type(exc).__name__}",
                                 retryable=True) from None
        if response.status_code >= 400:
            raise _status_error(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}",
                                retry_after_seconds(response.headers.get("Retry-After")), self.cfg.token_env,
                                f"zeroshot.llm.url {self.label}")
        try:
            payload = response.json()
        except ValueError:
            return Reply(text=response.text[:RAW_LIMIT])
        return reply_from_json(payload)


class DatabricksTransport:
    """A Databricks serving endpoint through ``mlflow.deployments`` (``predict(endpoint=model, inputs=...)``).

    Authentication is MLflow's Databricks one (``DATABRICKS_HOST``/``DATABRICKS_TOKEN`` or a
    profile); ``client`` may be given (tests pass a fake with a ``predict`` method).
    """

    label = DATABRICKS

    def __init__(self, model: str, cfg: LlmConfig, client: Any = None) -> None:
        if client is None:
            from mlflow.deployments import get_deploy_client

            client = get_deploy_client(DATABRICKS)
        self.client, self.model, self.cfg = client, model, cfg

    def send(self, messages: list[dict[str, str]]) -> Reply:
        """One ``predict`` call; HTTP errors (``requests.HTTPError`` from MLflow) map as for HTTP."""
        import requests

        inputs = {"messages": messages, "temperature": 0, "max_tokens": self.cfg.max_tokens}
        try:
            payload = self.client.predict(endpoint=self.model, inputs=inputs)
        except requests.Timeout:
            raise TransportError("timeout", "the serving endpoint did not answer in time", retryable=True) from None
        except requests.ConnectionError as exc:
            raise TransportError("connection_error", f"cannot reach Databricks: {type(exc).__name__}", retryable=True) from None
        except Exception as exc:  # noqa: BLE001 (MLflow raises HTTPError or MlflowException: the status decides)
            response = getattr(exc, "response", None)
            code = getattr(response, "status_code", None) or _status_in(str(exc))
            if code is None:
                raise TransportError("error", f"{type(exc).__name__}: {exc}"[:300], retryable=False) from None
            headers = getattr(response, "headers", None) or {}
            raise _status_error(int(code), f"HTTP {code}: {exc}"[:300], retry_after_seconds(headers.get("Retry-After")),
                                "DATABRICKS_TOKEN", f"Databricks serving endpoint {self.model}") from None
        return reply_from_json(dict(payload) if not isinstance(payload, dict) and hasattr(payload, "keys") else payload)


def _status_in(message: str) -> int | None:
    """An HTTP status quoted in an MLflow error message (``... status code 429 ...``), if any."""
    found = re.search(r"\b(?:status(?: code)?|HTTP)\D{0,3}([1-5]\d\d)\b", message, re.IGNORECASE)
    return int(found.group(1)) if found else None


# --------------------------------------------------------------------------------------------
# Client-side limits, cache, accounting
# --------------------------------------------------------------------------------------------


class RateLimiter:
    """Spaces request starts at least ``60 / requests_per_minute`` seconds apart (all threads)."""

    def __init__(self, requests_per_minute: float) -> None:
        self.interval = 60.0 / requests_per_minute
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller may start a request."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class AnswerCache:
    """Answers by key in an append-only JSON-lines file (a torn last line is skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # an interrupted write: that answer is asked again

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached entry of ``key``."""
        return self._entries.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Add ``entry`` and append it to the file at once (a crash keeps what was paid for)."""
        record = {"key": key, **entry}
        with self._lock:
            self._entries[key] = record
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


@dataclass
class _Tally:
    """Thread-safe counters that end up in ``usage``."""

    requests: int = 0
    retries: int = 0
    malformed_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


def no_poi_paragraphs(config: Config, paragraphs: Sequence[str]) -> list[bool]:
    """Whether each paragraph is the configured template's sentence for a region without POIs."""
    from landuse.zeroshot.prompts import config_template, is_zero_pois

    template = config_template(config)
    return [is_zero_pois(text, template) for text in paragraphs]


@dataclass(frozen=True)
class _Result:
    """One region's outcome: probabilities, or a reject reason with the raw text."""

    probs: np.ndarray | None
    reason: str = ""
    raw: str = ""


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


@register
class LlmZeroShot(ZeroShotMethod):
    """Zero-shot land use from the user's chat model (module docstring)."""

    name = "llm"
    backoff_s = 1.0  # first retry wait; doubles per retry (tests shorten it)

    def __init__(self, config: Config, transport: Transport | None = None) -> None:
        super().__init__(config)
        cfg = config.zeroshot.llm
        self.cfg = cfg
        self.model = cfg.model or os.environ.get(ENV_MODEL) or None
        url = cfg.url or os.environ.get(ENV_URL) or None
        tracking = config.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if url is None and tracking.startswith(DATABRICKS):
            url = DATABRICKS
        if url is None:
            raise ConfigError(f"zeroshot.llm.url: not set (set zeroshot.llm.url or {ENV_URL} to an OpenAI-compatible "
                              "base URL such as http://127.0.0.1:8000/v1, or to `databricks`)")
        if self.model is None:
            raise ConfigError(f"zeroshot.llm.model: not set (set zeroshot.llm.model or {ENV_MODEL} to the model "
                              "or serving endpoint name)")
        self.url = url
        self._token = os.environ.get(cfg.token_env) or None
        if transport is not None:
            self.transport = transport
        elif url.strip().lower() == DATABRICKS:
            self.transport = DatabricksTransport(self.model, cfg)
        else:
            self.transport = HttpTransport(url, self.model, cfg, self._token)

    @property
    def cache_path(self) -> Path:
        """The JSON-lines answer cache."""
        return self.config.driver_dir / "cache" / "llm" / "answers.jsonl"

    def cache_key(self, system: str, prompt: str) -> str:
        """sha256 of (url, model, system message, prompt, distribution flag)."""
        material = json.dumps([public_url(self.url), self.model, system, prompt, bool(self.cfg.distribution)],
                              ensure_ascii=False)
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def redact(self, text: str) -> str:
        """``text`` with the token (and the url's credentials) replaced by ``***``."""
        if self._token:
            text = text.replace(self._token, "***")
        if self.url != public_url(self.url):
            text = text.replace(self.url, public_url(self.url))
        return text

    # -- one request, with transport retries ---------------------------------------------------

    def _send(self, messages: list[dict[str, str]], limiter: RateLimiter, tally: _Tally) -> Reply:
        attempt = 0
        while True:
            limiter.wait()
            tally.add(requests=1)
            try:
                reply = self.transport.send(messages)
            except ConfigError as exc:
                raise ConfigError(self.redact(str(exc))) from None
            except TransportError as exc:
                if not exc.retryable or attempt >= self.cfg.max_retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self.backoff_s * 2 ** attempt
                delay = min(delay, BACKOFF_CAP_S)
                log.debug("llm: %s, retry %d/%d in %.2f s", exc.reason, attempt + 1, self.cfg.max_retries, delay)
                tally.add(retries=1)
                attempt += 1
                time.sleep(delay)
                continue
            tally.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
            return reply

    # -- one region: ask, re-ask once when malformed ----------------------------------------------

    def _ask(self, system: str, prompt: str, classes: list[str], limiter: RateLimiter, tally: _Tally,
             cache: AnswerCache) -> tuple[_Result, bool]:
        """(result, cache hit) for one prompt."""
        key = self.cache_key(system, prompt)
        cached = cache.get(key)
        if cached is not None:
            return self._judge(str(cached.get("answer", "")), classes), True
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        try:
            reply = self._send(messages, limiter, tally)
            try:
                parse_answer(reply.text, classes, self.cfg.distribution)
            except MalformedAnswer as problem:
                tally.add(malformed_retries=1)
                messages += [{"role": "assistant", "content": reply.text},
                             {"role": "user", "content": reminder_message(str(problem), classes, self.cfg.distribution)}]
                reply = self._send(messages, limiter, tally)
        except TransportError as exc:
            return _Result(None, exc.reason, self.redact(str(exc))[:RAW_LIMIT]), False
        cache.put(key, {"answer": reply.text, "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens})
        return self._judge(reply.text, classes), False

    def _judge(self, text: str, classes: list[str]) -> _Result:
        try:
            label, dist = parse_answer(text, classes, self.cfg.distribution)
        except MalformedAnswer:
            return _Result(None, "malformed_answer", text[:RAW_LIMIT])
        if dist is None:
            dist = np.zeros(len(classes))
            dist[classes.index(label)] = 1.0
        return _Result(dist)

    # -- all regions ------------------------------------------------------------------------------

    def score(self, prompts: RegionPrompts) -> ZeroShotOutput:
        """Ask the model about every region (cached answers reused); rejects say why a region is unscored."""
        classes = list(prompts.classes)
        system = system_message(classes, self.cfg.distribution)
        cache = AnswerCache(self.cache_path)
        limiter, tally = RateLimiter(self.cfg.requests_per_minute), _Tally()
        n = len(prompts.region_ids)
        results: list[tuple[_Result, bool] | None] = [None] * n
        stop = threading.Event()  # set by a ConfigError (bad token): nothing more is sent

        empty = no_poi_paragraphs(self.config, prompts.paragraphs)

        def ask(i: int) -> tuple[_Result, bool] | None:
            if stop.is_set():
                return None
            if empty[i]:  # nothing to describe: not worth a request (as the text method)
                return _Result(None, "no_pois", prompts.paragraphs[i]), False
            try:
                return self._ask(system, prompts.prompts[i], classes, limiter, tally, cache)
            except ConfigError:
                stop.set()
                raise

        pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency, thread_name_prefix="landuse-llm")
        try:
            futures = [pool.submit(ask, i) for i in range(n)]
            for i, future in enumerate(futures):
                results[i] = future.result()  # a ConfigError (bad token) surfaces here
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        probs = np.zeros((n, len(classes)), dtype=np.float64)
        scored = np.zeros(n, dtype=bool)
        rejects: list[tuple[int, str, str]] = []
        hits = 0
        for i, item in enumerate(results):
            assert item is not None
            result, hit = item
            hits += hit
            if result.probs is None:
                rejects.append((int(prompts.region_ids[i]), result.reason, result.raw))
            else:
                probs[i], scored[i] = result.probs, True
        frame = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS)).astype({"region_id": "int64"})
        usage = {
            "method": self.name, "model": self.model, "url": public_url(self.url), "transport": self.transport.label,
            "distribution": bool(self.cfg.distribution), "regions": n, "scored": int(scored.sum()),
            "requests": tally.requests, "retries": tally.retries, "malformed_retries": tally.malformed_retries,
            "cache_hits": hits, "cache": str(self.cache_path),
            "prompt_tokens": tally.prompt_tokens, "completion_tokens": tally.completion_tokens,
            "cost": round(tally.prompt_tokens / 1000 * self.cfg.price_per_1k_input
                          + tally.completion_tokens / 1000 * self.cfg.price_per_1k_output, 6),
            "rejects": dict(sorted(Counter(r[1] for r in rejects).items())),
        }
        log.info("llm %s: %d/%d regions scored, %d requests (%d retries), %d cache hits, %d+%d tokens",
                 self.model, usage["scored"], n, tally.requests, tally.retries, hits, tally.prompt_tokens,
                 tally.completion_tokens)
        return ZeroShotOutput(probs=probs, scored=scored, rejects=frame, usage=usage)
