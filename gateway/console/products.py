"""Products in the console: new and edit forms, retire and restore, the list's search and
states, the product page's actions and per-app preview, and the spreadsheet export.

Every write goes through ``gateway.products`` with the API's body (see ``forms``), so the
console and the API accept and refuse exactly the same things.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from adapters import by_platform

from .. import products as catalogue
from ..api import after_save
from ..api_console import all_products, file_response, whole_preview
from ..appkeys import CLOCK, LINKS, PUBLIC_URL, STORE
from ..bulk import Kind, export_file
from ..catalog import product_errors, share_url, window_error
from ..dashboard.session import Session
from ..dashboard.views import render, require_session
from ..errors import ApiError
from ..inputs import parse_uint
from ..store import PRODUCT_STATES, Product, ProductState
from .forms import ProductForm, local_moment
from .web import console_page, console_write, forbidden, merchant_of, page_context, see_other

__all__ = ["STATE_NAMES", "list_filter", "product_context", "setup_routes"]

#: What a product's state is called on the page.
STATE_NAMES: Mapping[ProductState, str] = {"live": "在售", "scheduled": "未开始",
                                           "ended": "已结束", "retired": "已下架"}


# --- the list ------------------------------------------------------------------------------------
def list_filter(request: web.Request, products: Sequence[Product]) -> tuple[
        list[Product], dict[str, Any]]:
    """The products the list's search box and state tabs keep, and what the page needs for
    them: the query, the state chosen, how many are in each state, each one's share link."""
    query = request.query.get("q", "").strip()[:100]
    chosen = request.query.get("state", "")
    now = time.time()
    states = {p.id: p.state(now) for p in products}
    found = [p for p in products
             if not query or query.lower() in p.title.lower() or query.lower() in p.code.lower()]
    counts = {s: sum(1 for p in found if states[p.id] == s) for s in PRODUCT_STATES}
    if chosen in PRODUCT_STATES:
        found = [p for p in found if states[p.id] == chosen]
    else:
        chosen = ""
    base = request.app[PUBLIC_URL]
    return found, {"q": query, "state": chosen, "state_counts": counts, "states": states,
                   "state_names": STATE_NAMES, "total_products": len(products),
                   "share_urls": {p.id: share_url(base, p.code) for p in products}}


# --- the product page ----------------------------------------------------------------------------
def short_url(url: str | None, limit: int = 44) -> str:
    """A link as a person skims it: no ``https://``, long ones cut (the whole one is its
    title)."""
    if not url:
        return ""
    text = url.removeprefix("https://").removeprefix("http://")
    return text if len(text) <= limit else text[:limit - 1] + "…"



def _targets(product: Product) -> list[dict[str, Any]]:
    """Each storefront: its platform's name and what was given for it, labelled."""
    rows = []
    for platform, target in product.targets.items():
        adapter = by_platform(platform)
        if adapter is None:
            continue
        rows.append({"platform": platform, "label": adapter.label,
                     "fields": [(adapter.field_doc(k).label, v) for k, v in target.items()]})
    return rows


async def product_context(request: web.Request, session: Session,
                          product: Product) -> dict[str, Any]:
    """What the product page shows beside its figures: state, window, storefronts, actions
    and what each app will show (for iPhone or Android, ``?os=``)."""
    zone = request.app[CLOCK].zone
    os = "android" if request.query.get("os") == "android" else "ios"
    state = product.state(time.time())
    return {
        "can_edit": session.principal.can_write, "product_state": state,
        "state_names": STATE_NAMES, "target_rows": _targets(product),
        "valid_from_text": local_moment(product.valid_from, zone).replace("T", " "),
        "valid_until_text": local_moment(product.valid_until, zone).replace("T", " "),
        "preview": await whole_preview(request, product, os), "preview_os": os,
        "short": short_url,
    }


# --- new and edit -------------------------------------------------------------------------------
def _form_page(request: web.Request, context: dict[str, Any], form: ProductForm, *,
               product: Product | None, status: int = 200) -> web.Response:
    return render(request, "console/product_form.html", status=status, form=form,
                  product=product, action=(f"/dashboard/products/{product.id}/edit" if product
                                           else "/dashboard/products/new"), **context)


@console_page
async def new_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    if not session.principal.can_write:
        return forbidden(request, session)
    context = await page_context(request, session, "products")
    return _form_page(request, context, ProductForm.blank(), product=None)


@console_write
async def create(request: web.Request, session: Session,
                data: Mapping[str, Any]) -> web.StreamResponse:
    merchant = await merchant_of(request, session)
    form = ProductForm.posted(data)
    body = form.body(creating=True)
    _, errors = product_errors(body, merchant, partial=False, zone=request.app[CLOCK].zone)
    if not errors:
        try:
            product = await catalogue.create_product(request.app[STORE], merchant, body,
                                                     zone=request.app[CLOCK].zone)
        except ApiError as exc:  # a slug taken meanwhile
            errors = [exc]
        else:
            await after_save(request.app, product)
            return see_other(f"/dashboard/products/{product.id}")
    form.show_errors(errors, merchant)
    context = await page_context(request, session, "products")
    return _form_page(request, context, form, product=None, status=422)


async def _own(request: web.Request, session: Session) -> Product:
    return await catalogue.product_by_id(request.app[STORE], session.merchant_id,
                                         parse_uint(request.match_info["id"]))


@console_page
async def edit_page(request: web.Request) -> web.StreamResponse:
    session = await require_session(request)
    if not session.principal.can_write:
        return forbidden(request, session)
    product = await _own(request, session)
    context = await page_context(request, session, "products")
    return _form_page(request, context,
                      ProductForm.of_product(product, request.app[CLOCK].zone), product=product)


@console_write
async def update(request: web.Request, session: Session,
                data: Mapping[str, Any]) -> web.StreamResponse:
    merchant = await merchant_of(request, session)
    product = await _own(request, session)
    form = ProductForm.posted(data)
    form.fields["slug"].value = product.code
    zone = request.app[CLOCK].zone
    body = form.body(creating=False)
    fields, errors = product_errors(body, merchant, partial=True, zone=zone)
    if not errors:
        wrong = window_error(fields.get("valid_from"), fields.get("valid_until"))
        errors = [wrong] if wrong else []
    if not errors:
        try:
            changed = await catalogue.update_product(request.app[STORE], merchant, product,
                                                     body, zone=zone)
        except ApiError as exc:  # retired meanwhile
            errors = [exc]
        else:
            await after_save(request.app, changed, before=product)
            return see_other(f"/dashboard/products/{changed.id}")
    form.show_errors(errors, merchant)
    context = await page_context(request, session, "products")
    return _form_page(request, context, form, product=product, status=422)


@console_write
async def retire(request: web.Request, session: Session,
                data: Mapping[str, Any]) -> web.StreamResponse:
    product = await _own(request, session)
    await catalogue.retire_product(request.app[STORE], product)
    request.app[LINKS].forget(product.code)
    return see_other(f"/dashboard/products/{product.id}")


@console_write
async def restore(request: web.Request, session: Session,
                 data: Mapping[str, Any]) -> web.StreamResponse:
    product = await _own(request, session)
    await after_save(request.app, await catalogue.restore_product(request.app[STORE], product))
    return see_other(f"/dashboard/products/{product.id}")


# --- the export ----------------------------------------------------------------------------------
@console_page
async def export(request: web.Request) -> web.StreamResponse:
    """The list as a spreadsheet (the same file ``GET /api/products/export`` gives)."""
    session = await require_session(request)
    kind: Kind = "csv" if request.match_info["fmt"] == "csv" else "xlsx"
    found, _ = list_filter(request, await all_products(request.app[STORE], session.merchant_id))
    data = await export_file(found, kind, request.app[PUBLIC_URL],
                             zone=request.app[CLOCK].zone, now=time.time())
    return file_response(data, kind, f"linkloop-products-{request.app[CLOCK].today()}")


def setup_routes(app: web.Application) -> None:
    """Before the dashboard's: ``/dashboard/products/{id}`` would take "new" for an id."""
    from ..errors import guarded

    router = app.router
    router.add_get("/dashboard/products/new", guarded(new_page))
    router.add_post("/dashboard/products/new", guarded(create))
    router.add_get(r"/dashboard/products/export.{fmt:csv|xlsx}", guarded(export))
    router.add_get(r"/dashboard/products/{id:\d+}/edit", guarded(edit_page))
    router.add_post(r"/dashboard/products/{id:\d+}/edit", guarded(update))
    router.add_post(r"/dashboard/products/{id:\d+}/retire", guarded(retire))
    router.add_post(r"/dashboard/products/{id:\d+}/restore", guarded(restore))

