"""HTTP requests of a pull: the one retry layer, error classification and URL redaction.

Retries are bounded and only for failures that may pass: HTTP 429, 500, 502, 503 and 504,
a timeout, and a connection dropped after it was made (mid-headers or mid-body). The wait
is ``Retry-After`` when the server sends one (seconds or an HTTP date), else exponential
backoff (1, 2, 4 … s, at most 60 s). A refused connection or an unknown host fails at once
(retrying does not help); so do 401/403 (a key problem) and every other status. A final
failure is a :class:`~mfa.errors.PullError` of one line naming the source, the URL with
its secrets redacted, the status and the fix. The Prefect task of the pull step has no
retries of its own: this is the only layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from urllib3.exceptions import NewConnectionError

from mfa.errors import PullError

__all__ = ["RETRY_STATUS", "Client", "redact", "without"]

log = logging.getLogger("mfa")

#: HTTP statuses worth a retry.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: The longest wait a ``Retry-After`` may ask for before the pull gives up (s).
MAX_RETRY_AFTER_S = 600.0
#: Backoff without ``Retry-After``: base × 2^attempt, capped (s).
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0

_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "auth")


def redact(url: str, secrets: tuple[str, ...] = ()) -> str:
    """``url`` with every secret-looking query value (and each of ``secrets``) as ``***``."""
    parts = urlsplit(url)
    query = [
        (k, "***" if any(w in k.lower() for w in _SECRET_WORDS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    text = urlunsplit(parts._replace(query=urlencode(query, safe="*,:/")))
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def without(url: str, name: str) -> str:
    """``url`` without the query parameter ``name`` (a key a server echoed in a link)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    return urlunsplit(parts._replace(query=urlencode(query, safe=",:/")))


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _refused(exc: requests.ConnectionError) -> bool:
    """True when no connection was made at all (refused, unknown host): not worth a retry."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NewConnectionError | ConnectionRefusedError):
            return True
        stack += [getattr(e, "reason", None), e.__cause__, e.__context__, *getattr(e, "args", ())]
        stack = [x for x in stack if isinstance(x, BaseException)]
    return False


class Client:
    """A requests session for one source: bounded retries, secrets kept out of messages.

    ``what`` names the source in messages (e.g. ``sources.footprints``); ``secrets`` are
    strings (API keys) redacted from every message; ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        what: str,
        retries: int = 4,
        timeout_s: float = 60.0,
        secrets: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        key_param: tuple[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.what = what
        #: the query parameter that carries the key (name, value), added to every request
        #: by the session and never part of a request that is saved (see :func:`without`)
        self.key_param = key_param
        self.retries = retries
        self.timeout_s = timeout_s
        self.secrets = secrets
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "mfa-pull", **(headers or {})})
        if key_param is not None:
            self.session.params = {key_param[0]: key_param[1]}
        self.sleep = sleep
        self.requests = 0

    def close(self) -> None:
        self.session.close()

    def _fail(self, url: str, problem: str, fix: str) -> PullError:
        return PullError(f"{self.what}: {redact(url, self.secrets)}: {problem}; {fix}")

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        stream_to: Callable[[requests.Response], None] | None = None,
        before: Callable[[], Mapping[str, str]] | None = None,
    ) -> requests.Response:
        """Send one request with the retry policy; return the response (status in ``ok``).

        Without ``stream_to`` the body is read completely inside the retry loop (a
        connection dropped mid-body is retried); with it, ``stream_to(response)`` consumes
        the body of a 200 or 206 response (and is called again on a retry). ``before()``,
        called before each attempt, gives headers added to that attempt (a download's
        ``Range`` from what it has on disk: :mod:`mfa.pull.download`).
        """
        full = requests.Request(method, url, params=params).prepare().url or url
        attempt = 0
        while True:
            status: int | str
            wait: float | None = None
            try:
                self.requests += 1
                sent = {**(headers or {}), **(before() if before is not None else {})}
                r = self.session.request(
                    method,
                    url,
                    params=params,
                    headers=sent or None,
                    json=json,
                    timeout=self.timeout_s,
                    stream=stream_to is not None,
                    allow_redirects=True,
                )
                with r:
                    if r.status_code in ok:
                        if stream_to is not None and r.status_code in (200, 206):
                            stream_to(r)
                        else:
                            _ = r.content  # read it all here: a cut-off body is retried
                        return r
                    status = r.status_code
                    if status not in RETRY_STATUS:
                        said = _ows_words(r)
                        if said is not None:  # an OGC service says what is wrong
                            raise self._fail(
                                full,
                                f"HTTP {status}, the service answered an exception: {said}",
                                "check the request's keys (coverage id, bbox, CRS, axes) "
                                "against the service's capabilities",
                            )
                        raise self._fail(full, f"HTTP {status} {r.reason}", _fix(status))
                    wait = _retry_after(r.headers.get("Retry-After"))
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                if isinstance(exc, requests.ConnectionError) and _refused(exc):
                    raise self._fail(
                        full,
                        "connection refused or host unknown",
                        "check the url and the network (not retried)",
                    ) from None
                status = f"connection dropped ({type(exc).__name__})"
            except requests.Timeout:
                status = f"no answer within {self.timeout_s:g} s"
            except requests.RequestException as exc:
                raise self._fail(
                    full, f"request failed ({type(exc).__name__})", "check the url"
                ) from None
            if attempt >= self.retries:
                shown = f"HTTP {status}" if isinstance(status, int) else status
                raise self._fail(
                    full,
                    f"{shown} after {attempt + 1} attempts",
                    "the service is busy or down: try again later (the last good snapshot is kept)",
                )
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                raise self._fail(
                    full,
                    f"HTTP {status}, the service asks to wait {wait:.0f} s",
                    "try again later (the last good snapshot is kept)",
                )
            delay = wait if wait is not None else min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
            log.warning(
                "%s: %s, retry %d of %d in %.1f s",
                self.what,
                status,
                attempt + 1,
                self.retries,
                delay,
            )
            self.sleep(delay)
            attempt += 1


def _ows_words(r: requests.Response) -> str | None:
    """``code (locator): text`` of an OWS ExceptionReport body (OGC services answer errors
    with one), else None; reads at most the first 64 KiB."""
    if "xml" not in r.headers.get("Content-Type", "").lower():
        return None
    from mfa.pull.wcs import HEAD, ows_exception

    try:
        head = next(r.iter_content(HEAD), b"")
    except requests.RequestException:
        return None
    return ows_exception(head)


def _fix(status: int) -> str:
    if status in (401, 403):
        return "the API key is missing, wrong or expired: set the variable named in api_key_env"
    if status == 404:
        return "check url and collection (the service may have moved)"
    if status == 400:
        return "check filters and page_size against the service's documentation"
    return "check the url, or try again later"
