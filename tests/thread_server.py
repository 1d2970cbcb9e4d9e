"""A fake platform API (tests/fake_wechat.py, tests/fake_wecom.py) served from a thread of
its own over loopback, for tests whose gateway runs as its own process and calls it while
the test thread drives a browser."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from .test_cli import free_port


@contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """``app`` on a free loopback port, on an event loop in a daemon thread; its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
