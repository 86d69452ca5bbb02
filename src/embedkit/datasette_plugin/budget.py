"""How many calls to paid models visitors may cause: token buckets per minute, for the whole
instance and for each visitor's IP address."""

import threading
import time

from ..errors import EmbedkitError

MAX_VISITORS = 10_000  # buckets kept; past it, those of visitors idle for a minute (full again) go


class Spent(EmbedkitError):
    def __init__(self, message, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class Budget:
    """Thread-safe: SQL threads and the event loop both spend from it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._buckets: dict = {}  # key -> (tokens, when)

    def spend(self, model_id, per_minute, ip=None, per_ip_minute=None):
        """Take one call for the instance (and for ip); raise Spent, naming when to try
        again, if either has none left. Nothing is taken when either is refused."""
        now = time.monotonic()
        wanted = [("instance", per_minute, "on this server")]
        if ip is not None and per_ip_minute is not None:
            wanted.append((("ip", ip), per_ip_minute, "for each visitor"))
        with self._lock:
            levels = [(key, rate, self._level(key, rate, now)) for key, rate, _ in wanted]
            for (_, rate, tokens), (_, _, where) in zip(levels, wanted):
                if tokens < 1:
                    wait = 60.0 if rate == 0 else (1 - tokens) * 60.0 / rate
                    raise Spent(
                        f"searches with model {model_id} are limited to {rate} a minute {where}; "
                        f"try again in {max(1, round(wait))} s",
                        wait,
                    )
            for key, _, tokens in levels:
                self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > MAX_VISITORS:
                self._forget_full(now)

    def _level(self, key, rate, now) -> float:
        tokens, when = self._buckets.get(key, (float(rate), now))
        return min(float(rate), tokens + (now - when) * rate / 60.0)

    def _forget_full(self, now):
        for key, (_, when) in list(self._buckets.items()):
            if key != "instance" and now - when > 60:
                del self._buckets[key]
