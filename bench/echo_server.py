"""aiohttp's own JSON echo: the floor a queue request is compared with (`queue_bench.py` runs it).

    python bench/echo_server.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.json_response(await request.json())


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
