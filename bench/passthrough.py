"""The reference floor: the least an aiohttp proxy can do per request.

Forwards the body bytes of ``POST /v1/chat/completions`` to the upstream with one shared client
session and returns the upstream's bytes and status; an event stream (``text/event-stream``) is
forwarded piece by piece as it arrives. No parsing, no logging, one worker. tierwise's
overhead is measured against this, in the same run, on the same machine.

    python bench/passthrough.py --upstream http://127.0.0.1:9000/v1 --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web


def create_app(upstream: str) -> web.Application:
    url = upstream.rstrip("/") + "/chat/completions"
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with request.app[session_key].post(url, data=await request.read(), headers=headers) as resp:
            if resp.content_type != "text/event-stream":
                body = await resp.read()
                return web.Response(body=body, status=resp.status, content_type="application/json")
            # A stream: each piece goes to the client as it arrives, never buffered.
            out = web.StreamResponse(status=resp.status, headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            async for piece in resp.content.iter_any():
                await out.write(piece)
            await out.write_eof()
            return out

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[session_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        yield
        await app[session_key].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL, ending in /v1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # same as tierwise: uvloop is an optional speed-up
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    ready = f"listening on http://{args.host}:{args.port}/v1"  # printed once the socket is bound
    web.run_app(create_app(args.upstream), host=args.host, port=args.port, access_log=None, loop=loop,
                print=lambda _: print(ready, flush=True))  # fmt: skip


if __name__ == "__main__":
    main()
