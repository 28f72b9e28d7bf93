"""The request guard in front of both apps (the dashboard and `trainlab serve`), as Jupyter guards
its loopback server: a server on 127.0.0.1 is reachable from every web page the user opens.

- **Host allow-list** (DNS rebinding): a page on evil.example whose name is made to resolve to
  127.0.0.1 sends `Host: evil.example`; only the bound host, localhost, 127.0.0.1, [::1] and the
  names given with `--allow-host` are served. A server bound to every interface (0.0.0.0) always
  has a token, which a rebound page cannot know, so there every Host is served.
- **Cross-site reads of the APIs**: an `<img>` or `<script>` tag on any page can make the browser GET
  a URL here (`/api/v1/report?runs=...` costs seconds of CPU). A request to `/api/` or `/v2` that
  the browser marks as coming from another site (`Sec-Fetch-Site: cross-site` or `same-site`) is
  refused, whatever its method; the pages themselves may still be opened from a link.
- **Cross-site requests** (CSRF): a state-changing request (POST, PUT, PATCH, DELETE) is refused
  when the browser says it comes from another site (`Sec-Fetch-Site`), when its `Origin` is not
  this server, and, on the dashboard, unless it carries a JSON body or the `X-Trainlab` header the
  page sends: both need a CORS preflight, which this server never grants, so no other site's page
  can send them. API clients (curl, scripts) send no Origin; `-H 'X-Trainlab: 1'` or JSON is all
  they add. A valid `Authorization: Bearer` token passes too: no page can forge it.
- **Body size**, counted while the body streams in (chunked uploads have no Content-Length): the
  routes read bodies without limits of their own.
- **The token**, when the server has one: `Authorization: Bearer T` (any case of "Bearer"), the
  cookie the page sets, or `?token=T` (the link printed at start; EventSource cannot send
  headers), compared in constant time; a good `?token=` sets the cookie.

Every refusal is 403 (401 for the token, 413 for size) with one line of JSON, like every other
error here. Each check is made here once, for every route of both apps.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CLIENT_HEADER = "x-trainlab"
COOKIE = "trainlab_token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def split_host(value: str) -> tuple[str, str | None]:
    """'Host' header or netloc -> (lower-case host without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() and ":" not in host else (value, None)


def allowed_hosts(bound: str, extra: list[str] | tuple[str, ...] = ()) -> set[str] | None:
    """The Host names to serve; None serves any (a wildcard bind, or '*' among `extra`)."""
    bound = split_host(bound)[0]
    if bound in WILDCARD_HOSTS or "*" in extra:
        return None
    names = {bound, *LOOPBACK_NAMES, *(split_host(e)[0] for e in extra)}
    try:
        if ipaddress.ip_address(bound).is_loopback:
            names |= LOOPBACK_NAMES
    except ValueError:
        pass
    return names


def bearer(headers: dict[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


API_PREFIXES = ("/api/", "/v2")


def cross_site_reason(method: str, headers: dict[str, str], token: str | None, need_client_header: bool,
                      path: str = "/") -> str | None:
    """Why a request must be refused as cross-site, or None. `headers`: lower-case names."""
    site = headers.get("sec-fetch-site")
    if path.startswith(API_PREFIXES) and site in ("cross-site", "same-site"):
        return f"a {site} request from another web page (Sec-Fetch-Site: {site})"
    if method in SAFE_METHODS:
        return None
    if token and secrets.compare_digest(bearer(headers).encode(), token.encode()):
        return None  # a header no page on another site can set without a preflight
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request from another web page (Sec-Fetch-Site: {site[:40]})"
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or not parts.netloc or split_host(parts.netloc) != split_host(headers.get("host", "")):
            return f"a request from another origin ({origin[:80]})"
    if need_client_header:
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json" and CLIENT_HEADER not in headers:
            return ("a state-changing request without a JSON body or the X-Trainlab header "
                    "(send -H 'X-Trainlab: 1' from scripts)")
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised from the body stream, wherever the app reads it: the app's own error handler turns it
    into the one-line 413 (FastAPI re-raises HTTP exceptions met while parsing a body)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request is over the {limit:,}-byte limit")


def given_token(headers: dict[str, str], query_string: bytes) -> tuple[str, bool]:
    """The token a request carries (bearer, cookie or ?token=) and whether it came in the query."""
    found = bearer(headers)
    if found:
        return found, False
    try:
        cookie = SimpleCookie(headers.get("cookie", ""))
    except CookieError:
        cookie = SimpleCookie()
    if COOKIE in cookie:
        return cookie[COOKIE].value, False
    query = parse_qs(query_string.decode("latin-1"), max_num_fields=64).get("token", [""])[0]
    return query, bool(query)


class RequestGuard:
    """Pure ASGI middleware (streams pass through untouched): Host, cross-site, body-size and token checks."""

    def __init__(self, app, hosts: set[str] | None, token: str | None = None, need_client_header: bool = True,
                 max_body: int = 8 << 20, token_hint: str = "send Authorization: Bearer <token>"):
        self.app, self.hosts, self.token = app, hosts, token
        self.need_client_header, self.max_body, self.token_hint = need_client_header, max_body, token_hint

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = split_host(headers.get("host", ""))[0]
        if self.hosts is not None and host not in self.hosts:
            return await _refuse(send, 403, f"this server does not answer for host {host[:80]!r}; open it as "
                                            f"http://localhost or http://127.0.0.1, or start it with --allow-host NAME")
        why = cross_site_reason(scope["method"], headers, self.token, self.need_client_header, scope.get("path", "/"))
        if why is not None:
            return await _refuse(send, 403, f"refused {why}: this server only takes changes from its own page")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await _refuse(send, 413, f"the request is {int(length):,} bytes; the limit is {self.max_body:,}")
        set_cookie = False
        if self.token:
            given, from_query = given_token(headers, scope.get("query_string", b""))
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(send, 401, f"this server needs its token: {self.token_hint}")
            set_cookie = from_query
        return await self._limited(scope, receive, send, set_cookie)

    async def _limited(self, scope, receive, send, set_cookie: bool = False):
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def watched(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if set_cookie:  # the link printed at start carried the token: the page keeps it in a cookie
                    cookie = f"{COOKIE}={self.token}; HttpOnly; Path=/; SameSite=Strict".encode("latin-1")
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # read outside the app's handlers
            if not started:
                await _refuse(send, 413, exc.detail)
