"""What every HTTP service embedkit talks to (embedding models, chat models, rerankers) has
in common: its settings (base URL, API key, timeout, retries), the key lookup, one shared
httpx client, and the request loop with its retry rules.

A request is retried, with exponential backoff and jitter, on 408/429/500/502/503/504,
timeouts and connections dropped without an answer; Retry-After (or retry-after-ms) is
honoured, capped at MAX_WAIT. Other errors (400, 404 unknown model, 401/403 key refused, an
exhausted quota) are not retried, and neither is a refused connection to a server never
reached (a wrong URL or a server that is not running). Keys never appear in messages.

httpx is imported only when a request is made.
"""

import email.utils
import math
import os
import random
import re
import threading
import time

from . import config
from .errors import EmbedkitError, first_line
from .version import USER_AGENT

# What every service's settings may say (services add their own). None: the service's
# default. Without key_name and key_env no Authorization header is sent (local servers).
COMMON = {
    "api": None,
    "base_url": None,
    "model_name": None,  # the model's name on the server
    "key_name": None,  # the key's name in keys.json ('embedkit keys set NAME')
    "key_env": None,  # an environment variable holding the key; it wins over keys.json
    "timeout": None,  # seconds to wait for each answer
    "retries": 6,  # attempts after the first, on throttling, server errors, timeouts, resets
    "backoff": 1.0,  # seconds before the first retry; doubled for each later one (with jitter)
}

# (environment variable, default) for each API's base URL.
BASE_URLS = {
    "openai": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "ollama": ("OLLAMA_HOST", "http://127.0.0.1:11434"),
}
OPENAI_KEY = ("openai", "OPENAI_API_KEY")  # key_name, key_env for api.openai.com

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
# The longest wait before one retry, whatever the backoff or a Retry-After header says.
MAX_WAIT = 60.0


# Settings


def check(label, settings: dict, known: dict, defaults: dict, endpoints=()) -> dict:
    """settings checked against known (name -> default), with defaults[api] filled in where
    None, the base URL normalised (endpoints: URL tails people paste that are cut off) and
    api.openai.com given the OpenAI key. Raises EmbedkitError naming label and the setting."""
    if not isinstance(settings, dict):
        raise EmbedkitError(f"{label}: settings should be a JSON object")
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise EmbedkitError(f"{label}: unknown setting {unknown[0]!r} (known: {', '.join(known)})")
    checked = {name: default if settings.get(name) is None else settings[name] for name, default in known.items()}
    api = checked["api"]
    if api not in defaults:
        raise EmbedkitError(f"{label}: api should be {' or '.join(repr(a) for a in defaults)}, not {api!r}")
    for name, default in defaults[api].items():
        if checked.get(name) is None:
            checked[name] = default

    where = "base_url"
    if checked["base_url"] is None:
        variable, default = BASE_URLS[api]
        checked["base_url"] = os.environ.get(variable) or default
        where = variable if os.environ.get(variable) else where
    checked["base_url"] = base_url(label, api, checked["base_url"], where, endpoints)

    name = checked["model_name"]
    if not isinstance(name, str) or not name.strip():
        raise EmbedkitError(f"{label}: model_name should be the model's name on the server, not {name!r}")
    checked["model_name"] = name.strip()

    for field in ("key_name", "key_env"):
        value = checked[field]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise EmbedkitError(f"{label}: {field} should be a name, not {value!r}")
    if checked["key_env"] is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", checked["key_env"]):
        raise EmbedkitError(
            f"{label}: key_env should be the name of an environment variable, not {checked['key_env']!r}"
        )
    if checked["key_name"] is None and checked["key_env"] is None and is_openai(checked["base_url"]):
        checked["key_name"], checked["key_env"] = OPENAI_KEY

    if not whole(checked["retries"], 0):
        raise EmbedkitError(f"{label}: retries should be a whole number (0 or more), not {checked['retries']!r}")
    if not number(checked["timeout"]) or checked["timeout"] <= 0:
        raise EmbedkitError(f"{label}: timeout should be a number of seconds above 0, not {checked['timeout']!r}")
    if not number(checked["backoff"]) or checked["backoff"] < 0:
        raise EmbedkitError(f"{label}: backoff should be a number of seconds (0 or more), not {checked['backoff']!r}")
    checked["timeout"], checked["backoff"] = float(checked["timeout"]), float(checked["backoff"])
    return checked


def whole(value, least) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def base_url(label, api, url, where="base_url", endpoints=()) -> str:
    """url normalised; where names where it came from (the setting or an environment variable)."""
    if not isinstance(url, str) or not url.strip():
        raise EmbedkitError(f"{label}: {where} should be a URL, not {url!r}")
    url = url.strip().rstrip("/")
    if api == "ollama" and "://" not in url:
        # OLLAMA_HOST may be host, host:port or a URL, as the ollama command accepts.
        url = "http://" + url
        if not re.search(r":\d+$", url.split("://", 1)[1]):
            url += ":11434"
    if not re.fullmatch(r"https?://[^/\s?#]+(/\S*)?", url, re.IGNORECASE):
        raise EmbedkitError(f"{label}: {where} should start with http:// or https://, not {url!r}")
    for endpoint in endpoints:
        if url.endswith(endpoint):
            url = url[: -len(endpoint)]
    return url


def is_openai(url) -> bool:
    return re.match(r"https://api\.openai\.com(:443)?(/|$)", url, re.IGNORECASE) is not None


# Failures


class Failure(Exception):
    """One request that failed for good; transient when more attempts might have succeeded."""

    def __init__(self, message, attempts, transient=False):
        super().__init__(message)
        self.attempts, self.transient = attempts, transient


class Stopped(Exception):
    """A request given up before it was sent, because another one failed."""


class Malformed(Exception):
    """An answer that is not what the API promises."""


# The service


class Service:
    """One HTTP service as settings (checked by check()) describe it: its key, its client
    (shared by the copies of a model), and requests with retries."""

    def __init__(self, label: str, settings: dict, connections: int = 1):
        self.label = label  # "model NAME", for messages
        self.settings = settings
        self.base_url = settings["base_url"]
        self.timeout = settings["timeout"]
        self.retries = settings["retries"]
        self.backoff = settings["backoff"]
        self.connections = connections
        self.lock = threading.Lock()
        self._client = None
        # Whether the server ever answered: a refused connection is retried only after that.
        self.reached = False

    def key(self) -> config.Secret | None:
        """The API key to send, or None when the settings name none; raises when one is named
        but not set. A config.Secret: only Bearer reveals it, as each request is sent."""
        name, variable = self.settings["key_name"], self.settings["key_env"]
        if name is None and variable is None:
            return None
        key = config.get_key(name, variable)
        if key is None:
            how = [f"set {variable}"] if variable else []
            how += [f"run 'embedkit keys set {name}'"] if name else []
            raise EmbedkitError(f"no API key for {self.label}: {' or '.join(how)}")
        return key

    def key_source(self) -> str:
        """Which key was sent, for a message saying it was refused."""
        variable, name = self.settings["key_env"], self.settings["key_name"]
        if variable and os.environ.get(variable):
            return f"the API key in {variable}"
        return f"the API key {name!r} in keys.json ('embedkit keys set {name}' replaces it)"

    def client(self):
        with self.lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                    limits=httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections),
                    headers={"User-Agent": USER_AGENT},
                )
            return self._client

    def message(self, failure, key, transient_hint="") -> str:
        """The one-line message of a failure, the key never in it."""
        message = f"{self.label}: {failure}"
        if isinstance(failure, Failure) and failure.transient and transient_hint:
            message += "; " + transient_hint
        return redact(message, key)

    def post(self, url, payload, key, stop=None, stream=False):
        """The 2xx response to POSTing payload (JSON) to url, retried as the rules say; raises
        Failure. With stream, the response's body is not read yet: the caller reads it and
        must close it. stop (a threading.Event) gives up between attempts once set (Stopped)."""
        import httpx

        client, shown_url, attempts = self.client(), shown(url), self.retries + 1
        stop = stop or threading.Event()
        for attempt in range(1, attempts + 1):
            if stop.is_set():
                raise Stopped()
            wait = None
            try:
                request = client.build_request("POST", url, json=payload)
                response = client.send(request, stream=stream, auth=Bearer(key) if key is not None else None)
            except httpx.TimeoutException:
                reason = f"no answer within {self.timeout:g} s"
            except httpx.ConnectError as ex:
                reason = f"cannot connect ({first_line(ex)})"
                if not self.reached:
                    raise Failure(f"cannot connect to {shown_url}: {first_line(ex)}", attempts=attempt) from None
            except (httpx.RemoteProtocolError, httpx.NetworkError):
                reason = "the connection was closed without an answer"
            except (httpx.HTTPError, httpx.InvalidURL) as ex:
                raise Failure(f"POST {shown_url} failed: {first_line(ex)}", attempts=attempt) from None
            else:
                self.reached = True
                status = response.status_code
                if 200 <= status < 300:
                    return response
                try:
                    if stream:
                        response.read()
                except httpx.HTTPError:
                    pass
                finally:
                    response.close()
                phrase = f"{status} {response.reason_phrase}".rstrip()
                detail, code = error_detail(response)
                if status in (401, 403):
                    if key is None:
                        raise Failure(
                            f"{shown(self.base_url)} wants an API key ({phrase}); give the model "
                            "key_name or key_env", attempts=attempt,
                        )
                    raise Failure(f"{self.key_source()} was refused by {shown(self.base_url)} ({phrase})", attempts=attempt)
                if status not in RETRY_STATUSES or code == "insufficient_quota":
                    if 300 <= status < 400 and response.headers.get("Location"):
                        detail = f"redirected to {response.headers['Location']}; use that as the base URL"
                    raise Failure(f"{shown_url} refused the request ({phrase}{': ' + detail if detail else ''})", attempts=attempt)
                reason = phrase + (f": {detail}" if detail else "")
                wait = retry_after(response.headers)
            if attempt == attempts:
                break
            if wait is None:
                delay = self.backoff * 2 ** (attempt - 1)
                wait = delay / 2 + random.uniform(0, delay / 2)
            if stop.wait(min(wait, MAX_WAIT)):
                raise Stopped()
        raise Failure(
            f"POST {shown_url} failed after {attempts} attempt{'s' if attempts > 1 else ''} ({reason})",
            attempts=attempts, transient=True,
        )


# Reading responses


def json_body(response):
    """The parsed JSON body of a response; Failure when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise Failure(f"{shown(str(response.url))} answered with something that is not JSON: {snippet(response.text)!r}", 1) from None


def retry_after(headers):
    """Seconds the server asks us to wait (retry-after-ms or Retry-After), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def error_detail(response):
    """The error message and code in an error response's body ('' and None when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return snippet(response.text), None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("error")
        code = error.get("code") or error.get("type")
        return snippet(str(message)) if message else "", code if isinstance(code, str) else None
    return snippet(str(error)), None


def snippet(text, limit=200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(url) -> str:
    """url without any user:password@ in it."""
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", url)


def redact(message, key) -> str:
    """message without the key (a config.Secret) in it: services echo a key they refuse."""
    return message.replace(key.reveal(), "***") if key is not None else message


class Bearer:
    """httpx auth that sets the Authorization header as each request is sent, so the key is
    never in a header dict or a local variable that a traceback could print."""

    def __init__(self, key: config.Secret):
        self.key = key

    def __call__(self, request):
        request.headers["Authorization"] = "Bearer " + self.key.reveal()
        return request

    def __repr__(self):
        return "<Bearer ***>"
