"""The HTTP transport under the Cekura client: httpx's API, aiohttp's connection pool.

httpx stays the client (requests, timeouts, ``MockTransport`` in tests); only the layer that moves bytes is
aiohttp's. httpcore's pool walks its connections each time a request is queued or released: a burst of 1,000
POSTs at 50 connections cost 0.69 ms of CPU per request through it (already split in small pools), 0.34-0.39 ms
through aiohttp, measured side by side in one run (BENCHMARKS.md, issue 15).

Why not the ``httpx-aiohttp`` package: its exception map turns ``ServerDisconnectedError`` and ``ClientOSError``
(the peer closed or reset the connection, possibly after reading the request) into ``httpx.ConnectTimeout``.
The client reads a connect error as "the request never left", and retries a POST after it: a paid run could be
created twice. Here only what surely happened before anything was sent is a connect error.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx

CHUNK = 64 * 1024


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """aiohttp's errors as the httpx errors the client branches on; unsure ones count as "maybe sent"."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:  # no connection within the connect or pool timeout
        raise httpx.ConnectTimeout(str(error) or "timed out connecting") from error
    except aiohttp.ClientConnectorError as error:  # refused, unreachable, DNS, TLS handshake: nothing sent
        raise httpx.ConnectError(str(error) or "cannot connect") from error
    except aiohttp.SocketTimeoutError as error:  # sent, no answer in time
        raise httpx.ReadTimeout(str(error) or "timed out reading the answer") from error
    except aiohttp.ServerDisconnectedError as error:  # closed after the request may have been read
        raise httpx.RemoteProtocolError(str(error) or "the server disconnected") from error
    except (aiohttp.ClientError, OSError) as error:  # reset, broken pipe, bad framing: maybe sent
        raise httpx.ReadError(f"{type(error).__name__}: {error}") from error


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body, read chunk by chunk through httpx (so a size cap can stop it early)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp session: keep-alive connections, at most ``max_connections``."""

    def __init__(self, *, max_connections: int, verify: ssl.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._tls = verify or httpx.create_ssl_context()  # loading the CA bundle once costs ~15 ms
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._tls)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies, if any
                auto_decompress=False,  # httpx decodes the body by its Content-Encoding
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),  # httpx's, as it set them
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()
        with _mapped_errors():
            response = await self._client().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    connect=timeout.get("pool"), sock_connect=timeout.get("connect"), sock_read=timeout.get("read")
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def http_client(*, max_connections: int) -> httpx.AsyncClient:
    """The HTTP client the daemon talks to Cekura through: keep-alive connections, 30 s to answer."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0), transport=AiohttpTransport(max_connections=max_connections)
    )
