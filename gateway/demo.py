"""``linkloop serve --demo``: a merchant with products on every platform, and a token.

Idempotent: a second run finds the demo merchant and products and prints them again.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .appkeys import PUBLIC_URL, SETTINGS, STORE, TOKENS
from .catalog import share_url, validate_product
from .store import CodeTaken, Merchant, MerchantExists, Store

__all__ = ["DEMO_MERCHANT", "demo_ctx", "seed_demo"]

DEMO_MERCHANT = Merchant("demo", "LinkLoop 演示店", ("shop.example.com",))

# Slug -> product body, as a merchant would POST it.
DEMO_PRODUCTS: dict[str, dict[str, Any]] = {
    "demo-tea": {
        "title": "明前龙井 250g",
        "price": "168.00",
        "targets": {
            "taobao": {"item_id": "600000000001", "share_token": "￥DEMO1234￥"},
            "tmall": {"item_id": "600000000002"},
            "jd": {"sku": "100000000001"},
            "pinduoduo": {"goods_id": "300000000001"},
            "web": {"url": "https://shop.example.com/tea"},
        },
    },
    "demo-mug": {
        "title": "手作陶瓷杯",
        "price": "59.90",
        "targets": {
            "douyin": {"product_id": "3500000000000000001"},
            "kuaishou": {"item_id": "20000000001"},
            "xiaohongshu": {"item_id": "64a0000000000000000000a1"},
            "web": {"url": "https://shop.example.com/mug"},
        },
    },
    "demo-mini": {
        "title": "会员小程序专享礼盒",
        "price": "99.00",
        "targets": {
            "wechat_miniprogram": {"appid": "wx0123456789abcdef", "path": "pages/item/index",
                                   "query": "id=42"},
            "alipay": {"appid": "2021000000000001", "page": "pages/item/index",
                       "query": "id=42"},
            "web": {"url": "https://shop.example.com/gift"},
        },
    },
}


async def seed_demo(store: Store) -> list[str]:
    """Create the demo merchant and products if missing; return their share codes."""
    try:
        merchant = await store.create_merchant(DEMO_MERCHANT)
    except MerchantExists:
        merchant = await store.get_merchant(DEMO_MERCHANT.id) or DEMO_MERCHANT
    codes = []
    for slug, body in DEMO_PRODUCTS.items():
        fields = validate_product(body, merchant, partial=False)
        with contextlib.suppress(CodeTaken):
            await store.create_product(
                merchant.id, code=slug, title=fields["title"], targets=fields["targets"],
                image_url=fields.get("image_url"), price=fields.get("price"))
        codes.append(slug)
    return codes


async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
    codes = await seed_demo(app[STORE])
    token = app[TOKENS].mint(DEMO_MERCHANT.id, "merchant", 30 * 86400)
    base = app[PUBLIC_URL]
    lines = [
        "",
        "LinkLoop demo is running.",
        f"  merchant: {DEMO_MERCHANT.id}   data: {app[SETTINGS].data_dir.resolve()}",
        f"  token:    {token}",
        "  share links:",
        *[f"    {share_url(base, code)}" for code in codes],
        f"  stats:    curl -H 'Authorization: Bearer {token}' {base}/api/stats",
        "",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)
    yield
