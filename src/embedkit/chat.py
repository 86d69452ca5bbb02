"""Chat models over HTTP: OpenAI-compatible `/v1/chat/completions` and Ollama's `/api/chat`,
streamed.

    model = chat.get_chat_model("ollama/llama3.2")
    for piece in model.stream([{"role": "user", "content": "Hello"}]):
        print(piece, end="")
    text = model.complete(messages)

Names are API/MODEL: openai/NAME (base URL from OPENAI_BASE_URL, key from OPENAI_API_KEY or
'embedkit keys set openai') or ollama/NAME (OLLAMA_HOST). Keys, timeouts and retries follow
embedkit.service, as for embedding models: a request is retried until the answer starts;
an answer cut off once it has started is an error, since retrying would repeat its text.
"""

import json
from collections.abc import Iterator

from . import service
from .errors import EmbedkitError, first_line

APIS = ("openai", "ollama")
SETTINGS = {**service.COMMON, "api": "openai", "temperature": None}
API_DEFAULTS = {
    "openai": {"timeout": 120.0},
    # A local model may take long to load and to read a long prompt before its first token.
    "ollama": {"timeout": 300.0},
}
PATHS = {"openai": "/chat/completions", "ollama": "/api/chat"}
EXAMPLES = {"openai": "openai/gpt-4o-mini", "ollama": "ollama/llama3.2"}


class ChatModel:
    """A chat model on an OpenAI-compatible server or on Ollama."""

    def __init__(self, name: str, settings: dict):
        label = f"chat model {name}"
        checked = service.check(label, settings, SETTINGS, API_DEFAULTS, (PATHS["openai"], PATHS["ollama"]))
        temperature = checked["temperature"]
        if temperature is not None and (not service.number(temperature) or temperature < 0):
            raise EmbedkitError(f"{label}: temperature should be a number (0 or more), not {temperature!r}")
        self.name = name
        self.api = checked["api"]
        self.model_name = checked["model_name"]
        self.temperature = temperature
        self.url = checked["base_url"] + PATHS[self.api]
        self._service = service.Service(label, checked)

    def __repr__(self):
        return f"<ChatModel {self.name} at {service.shown(self.url)}>"

    def stream(self, messages: list) -> Iterator[str]:
        """The answer to messages ([{"role", "content"}]) in pieces, as the server sends them."""
        import httpx

        key = self._service.key()
        try:
            response = self._service.post(self.url, self._payload(messages), key, stream=True)
        except service.Failure as failure:
            raise EmbedkitError(self._service.message(failure, key)) from None
        started = False
        try:
            for line in response.iter_lines():
                piece, done = self._read(line)
                if piece:
                    started = True
                    yield piece
                if done:
                    return
        except httpx.HTTPError as ex:
            what = "the answer was cut off" if started else "the answer did not come"
            raise EmbedkitError(
                service.redact(f"{self._service.label}: {what} ({type(ex).__name__}: {first_line(ex)})", key)
            ) from None
        finally:
            response.close()
        if not started:
            raise EmbedkitError(f"{self._service.label}: {service.shown(self.url)} sent an empty answer")

    def complete(self, messages: list) -> str:
        """The whole answer to messages."""
        return "".join(self.stream(messages))

    def _payload(self, messages):
        payload = {"model": self.model_name, "messages": messages, "stream": True}
        if self.temperature is not None:
            if self.api == "ollama":
                payload["options"] = {"temperature": self.temperature}
            else:
                payload["temperature"] = self.temperature
        return payload

    def _read(self, line):
        """(text, done) of one line of the stream: OpenAI's server-sent events ("data: {...}",
        "data: [DONE]"), Ollama's JSON lines."""
        line = line.strip()
        if self.api == "openai":
            if not line.startswith("data:"):
                return "", False  # comments, event names, keep-alives
            line = line[len("data:"):].strip()
            if line == "[DONE]":
                return "", True
        if not line:
            return "", False
        try:
            event = json.loads(line)
        except ValueError:
            raise EmbedkitError(
                f"{self._service.label}: {service.shown(self.url)} sent a line that is not JSON: {service.snippet(line)!r}"
            ) from None
        if not isinstance(event, dict):
            return "", False
        if event.get("error"):
            error = event["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise EmbedkitError(f"{self._service.label}: the server stopped with an error: {service.snippet(message)}")
        if self.api == "ollama":
            return (event.get("message") or {}).get("content") or "", bool(event.get("done"))
        choices = event.get("choices") or [{}]
        delta = choices[0].get("delta") or choices[0].get("message") or {}
        return delta.get("content") or "", False


def get_chat_model(name: str, **settings) -> ChatModel:
    """The chat model called API/MODEL (openai/... or ollama/...); settings (base_url,
    key_name, key_env, timeout, retries, backoff, temperature) override the defaults."""
    api, slash, model_name = (name or "").partition("/")
    if not slash or api not in APIS:
        raise EmbedkitError(
            f"unknown chat model {name!r}: use openai/NAME or ollama/NAME, e.g. {EXAMPLES['openai']} or {EXAMPLES['ollama']}"
        )
    if not model_name.strip():
        raise EmbedkitError(f"chat model {name!r}: give the model's name after {api}/, e.g. {EXAMPLES[api]}")
    given = {key: value for key, value in settings.items() if value is not None}
    if api == "openai" and "key_name" not in given and "key_env" not in given:
        base = given.get("base_url")
        # A local OpenAI-compatible server usually wants no key; api.openai.com gets its own.
        if base is None or service.is_openai(str(base)):
            given["key_name"], given["key_env"] = service.OPENAI_KEY
    return ChatModel(name, {**given, "api": api, "model_name": model_name})
