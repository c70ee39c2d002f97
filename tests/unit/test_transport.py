"""The daemon's HTTP transport over real sockets: what a failure of the wire means for a POST.

A raw TCP server on 127.0.0.1 misbehaves in each way a network or a proxy can. Only a request that surely never
left may be sent again ("cannot connect"); once it may have been read, a POST's lost answer is ambiguous and is
looked up by name before anything else (``scheduler.daemon.submission``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import SecretStr

from scheduler.cekura import CekuraClient, Submission
from scheduler.errors import CekuraAmbiguousError, CekuraUnavailableError
from scheduler.transport import AiohttpTransport

API_KEY = "ck-live-5f3a9e1d7c"
SUBMISSION = Submission(endpoint="run_scenarios", body={"name": "nightly@2026-11-29T03:00:00Z", "agent": 12})
STARTED = {"id": 9001, "status": "pending", "runs": [{"id": 55501, "status": "pending", "scenario": 101}]}


class Wire:
    """What the server saw: one entry per request read (its head and body), and how many connections."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0


async def read_request(reader: asyncio.StreamReader, wire: Wire) -> None:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *fields = head.strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (field.partition(":") for field in fields)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    wire.requests.append((line, headers, body))


def answer(status: int, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Wire], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[CekuraClient, Wire]]:
    wire = Wire()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        wire.connections += 1
        try:
            await handler(reader, writer, wire)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with client(f"http://127.0.0.1:{port}") as cekura:
        yield cekura, wire
    listener.close()


@asynccontextmanager
async def client(base_url: str, *, read_timeout: float = 5.0) -> AsyncIterator[CekuraClient]:
    timeout = httpx.Timeout(read_timeout, connect=2.0)
    async with httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(max_connections=4)) as http:
        yield CekuraClient(http=http, base_url=base_url, api_key=SecretStr(API_KEY))


def test_an_answer_arrives_whole_with_the_request_as_sent() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
        for _ in range(2):  # two requests on one kept-alive connection
            await read_request(reader, wire)
            writer.write(answer(200, gzip.compress(json.dumps(STARTED).encode()), "Content-Encoding: gzip"))
            await writer.drain()

    async def main() -> None:
        async with server(handler) as (cekura, wire):
            first = await cekura.submit(SUBMISSION)
            second = await cekura.submit(SUBMISSION)
            assert first.id == second.id == 9001 and first.runs[0].id == 55501
            line, headers, body = wire.requests[0]
            assert line == "POST /test_framework/v1/scenarios/run_scenarios/ HTTP/1.1"
            assert headers["x-cekura-api-key"] == API_KEY
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == SUBMISSION.body
            assert wire.connections == 1

    asyncio.run(main())


def test_nobody_listening_is_a_connect_error_safe_to_send_again() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused

    async def main() -> None:
        async with client(f"http://127.0.0.1:{port}") as cekura:
            with pytest.raises(CekuraUnavailableError, match="cannot connect"):
                await cekura.submit(SUBMISSION)

    asyncio.run(main())


async def close_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await read_request(reader, wire)


async def reset_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await read_request(reader, wire)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST


async def cut_in_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
    await read_request(reader, wire)
    whole = answer(200, json.dumps(STARTED).encode())
    writer.write(whole[: len(whole) - 10])
    await writer.drain()


@pytest.mark.parametrize("handler", [close_after_reading, reset_after_reading, cut_in_the_body])
def test_a_post_whose_answer_was_lost_is_ambiguous_never_a_connect_error(handler: Handler) -> None:
    async def main() -> None:
        async with server(handler) as (cekura, wire):
            with pytest.raises(CekuraAmbiguousError, match="lost"):
                await cekura.submit(SUBMISSION)
            assert len(wire.requests) == 1  # it was read: sending it again could create a second paid run
            with pytest.raises(CekuraUnavailableError, match="lost"):  # a read is only retried later
                await cekura.get_result(9001)

    asyncio.run(main())


def test_no_answer_within_the_read_timeout_is_ambiguous_for_a_post() -> None:
    released = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wire: Wire) -> None:
        await read_request(reader, wire)
        await released.wait()

    async def main() -> None:
        async with server(silent) as (cekura, wire):
            port = int(cekura.base_url.rpartition(":")[2])
            async with client(f"http://127.0.0.1:{port}", read_timeout=0.2) as impatient:
                with pytest.raises(CekuraAmbiguousError, match="ReadTimeout"):
                    await impatient.submit(SUBMISSION)
            released.set()
            assert len(wire.requests) == 1

    asyncio.run(main())
