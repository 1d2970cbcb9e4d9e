"""The baseline for ``bench/run.py``: the least an aiohttp app can do for a share link.

One process, uvloop like the gateway, no access log: ``GET /p/{code}`` looks the code up in
a dict loaded from a JSON file (code -> storefront URL) and answers a 302 with the same
headers the gateway's redirect carries; an unknown code is a 404.

    python bench/bare.py --port 8081 --links /tmp/links.json
"""

from __future__ import annotations

import argparse
import json
import sys

import uvloop
from aiohttp import web

_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def make_app(links: dict[str, str]) -> web.Application:
    async def share_link(request: web.Request) -> web.Response:
        location = links.get(request.match_info["code"])
        if location is None:
            return web.Response(status=404, text="not found")
        return web.Response(status=302, headers={"Location": location, **_HEADERS})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/p/{code}", share_link)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--links", required=True, help="JSON object: code -> Location")
    args = parser.parse_args(argv)
    with open(args.links, encoding="utf-8") as fh:
        links: dict[str, str] = json.load(fh)
    web.run_app(make_app(links), host=args.host, port=args.port, access_log=None,
                print=lambda msg: print(msg, file=sys.stderr), loop=uvloop.new_event_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
