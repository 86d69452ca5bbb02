"""A fake chat service on 127.0.0.1 for tests (stdlib only).

It answers OpenAI's POST /v1/chat/completions (server-sent events) and Ollama's POST
/api/chat (JSON lines), streaming `answer` (default: "The answer is in [1]."; or a function
of the request's JSON body that returns the answer) a few words per chunk, and it can be told
to fail:

    with ChatServer() as server:
        server.fail(503, times=2, retry_after="0")   # the next 2 requests get 503
        server.fail("reset")                          # drop the connection without answering
        server.fail("cut")                            # send half the answer, then drop the connection
        server.fail("error")                          # stream an error event after the first words
        ... ask at server.openai_url (OpenAI) or server.url (Ollama) ...
        server.calls     # the parsed JSON body of every request, in order
"""

import dataclasses
import json
import socket
import struct
import threading
import time

from httpserver import Served, TrackedHandler


@dataclasses.dataclass
class Fault:
    kind: object  # an HTTP status or "reset", "cut", "error"
    times: float = 1
    retry_after: str = None


class ChatServer(Served):
    def __init__(self, keys=None, answer="The answer is in [1]."):
        self.url = None
        self.keys = set(keys) if keys is not None else None  # accepted keys; None: no check
        self.answer = answer
        self.faults = []
        self.calls = []
        self.headers = []
        self.lock = threading.Lock()

    @property
    def openai_url(self):
        return self.url + "/v1"

    def fail(self, kind, times=1, retry_after=None):
        with self.lock:
            self.faults.append(Fault(kind, times, retry_after))

    def _fault(self):
        with self.lock:
            for fault in self.faults:
                if fault.times > 0:
                    fault.times -= 1
                    return fault
        return None


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        api = {"/v1/chat/completions": "openai", "/api/chat": "ollama"}.get(self.path)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        with owner.lock:
            owner.calls.append(request)
            owner.headers.append(dict(self.headers))
        if api is None:
            return self._json(404, {"error": f"not found: {self.path}"})
        if not isinstance(request, dict) or not request.get("messages"):
            return self._json(400, {"error": {"message": "messages are required"}})
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if owner.keys is not None and given not in owner.keys:
            return self._json(401, {"error": {"message": f"Incorrect API key provided: {given}"}})
        fault = owner._fault()
        kind = fault.kind if fault else None
        if isinstance(kind, int):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return self._json(kind, {"error": {"message": f"fault injected: {kind}"}}, headers)
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        answer = owner.answer(request) if callable(owner.answer) else owner.answer
        words = answer.split(" ")
        pieces = [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if api == "openai" else "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, piece in enumerate(pieces):
            if kind == "cut" and i == len(pieces) // 2:
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return None
            if kind == "error" and i == 1:
                self._chunk(self._event(api, {"error": {"message": "model overloaded"}}))
                break
            if api == "openai":
                event = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
            else:
                event = {"model": request.get("model"), "message": {"role": "assistant", "content": piece}, "done": False}
            self._chunk(self._event(api, event))
            time.sleep(0.001)
        else:
            if api == "openai":
                self._chunk(b"data: [DONE]\n\n")
            else:
                self._chunk(self._event(api, {"message": {"role": "assistant", "content": ""}, "done": True}))
        self._chunk(b"")
        return None

    def _event(self, api, value):
        line = json.dumps(value).encode()
        return b"data: " + line + b"\n\n" if api == "openai" else line + b"\n"

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()



ChatServer.handler_class = _Handler
