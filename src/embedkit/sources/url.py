"""Fetching a document by URL with httpx: timeouts, redirects, a size cap, conditional requests."""

import os
from dataclasses import dataclass

from ..errors import EmbedkitError
from ..version import USER_AGENT

TIMEOUT = float(os.environ.get("EMBEDKIT_FETCH_TIMEOUT", "30"))
MAX_BYTES = int(float(os.environ.get("EMBEDKIT_MAX_DOWNLOAD_MB", "100")) * 2**20)
MAX_REDIRECTS = 10


@dataclass
class Fetched:
    data: bytes
    content_type: str
    etag: str | None = None
    last_modified: str | None = None


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


_client = None


def client():
    """One client for the process, so fetching many documents from one host reuses connections."""
    global _client
    if _client is None:
        import httpx

        _client = httpx.Client(
            follow_redirects=True, max_redirects=MAX_REDIRECTS, headers={"User-Agent": USER_AGENT}
        )
    return _client


def fetch(url, etag=None, last_modified=None, max_bytes=None) -> "Fetched | None":
    """The body at url, or None when the server says it has not changed since etag/last_modified."""
    import httpx

    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        timeout = httpx.Timeout(TIMEOUT, connect=min(TIMEOUT, 10))
        with client().stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code == 304 and headers:
                return None
            if not response.is_success:  # an error, or a 304 nobody asked for
                raise EmbedkitError(f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > max_bytes:
                raise EmbedkitError(f"larger than the {_mb(max_bytes)} download limit ({_mb(int(announced))})")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:  # a server that did not say how large, or said wrong
                    raise EmbedkitError(f"larger than the {_mb(max_bytes)} download limit")
                chunks.append(chunk)
            return Fetched(
                b"".join(chunks),
                response.headers.get("Content-Type", ""),
                response.headers.get("ETag"),
                response.headers.get("Last-Modified"),
            )
    except httpx.TimeoutException:
        raise EmbedkitError(f"no answer within {TIMEOUT:g} s") from None
    except httpx.TooManyRedirects:
        raise EmbedkitError(f"more than {MAX_REDIRECTS} redirects") from None
    # Refused connections, unknown hosts, broken responses; and URLs httpx cannot even parse
    # (a bad port, an empty host label), which it does not count as HTTP errors.
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as ex:
        raise EmbedkitError(f"cannot fetch: {ex or type(ex).__name__}") from None


def _mb(size) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 2**10:.1f} KiB"
