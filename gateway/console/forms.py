"""The product form: fields named by the API's JSON paths, turned into the API's body.

``title``, ``price``, ``image_url``, ``slug``, ``valid_from``, ``valid_until`` and
``targets.<platform>.<field>`` for every field each adapter declares (``form_fields``, with
its ``field_doc``). A posted form becomes exactly the JSON body ``POST /api/products`` (or
``PATCH``) takes, and goes through the same validator; every error comes back to the field
it names, in Chinese, with what was typed kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from adapters import ADAPTERS

from ..errors import ApiError
from ..store import Merchant, Product
from .messages import field_label, say

__all__ = ["BASE_FIELDS", "FormField", "ProductForm", "Section", "dom_id", "local_moment"]

#: The product's own fields, in the form's order: (name, label, help, example, input type).
BASE_FIELDS: tuple[tuple[str, str, str, str, str], ...] = (
    ("title", "商品标题", "顾客在落地页和分享卡片上看到的名字", "明前龙井 250g", "text"),
    ("price", "价格（可选）", "元，最多两位小数", "168.00", "text"),
    ("image_url", "图片网址（可选）", "https 开头的公开图片地址，用在落地页和分享卡片上",
     "https://img.example.com/tea.jpg", "url"),
    ("slug", "链接短码（可选）", "分享链接 /p/ 后面的部分，创建后不能修改；不填则自动生成",
     "longjing-250", "text"),
    ("valid_from", "开售时间（可选）", "之前打开链接会看到「还没开始」，点击照常计数", "",
     "datetime-local"),
    ("valid_until", "结束时间（可选）", "之后打开链接会看到「已经结束」，点击照常计数", "",
     "datetime-local"),
)
_NUMERIC = {"item_id", "sku", "goods_id", "product_id"}


def dom_id(name: str) -> str:
    """An element id for a field: ``targets.jd.sku`` -> ``f-targets-jd-sku``."""
    return "f-" + name.replace(".", "-").replace("_", "-")


def local_moment(seconds: float | None, zone: tzinfo) -> str:
    """A stored moment as <input type="datetime-local"> shows it, in ``zone``."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%dT%H:%M")


@dataclass
class FormField:
    name: str
    label: str
    help: str
    example: str
    value: str = ""
    kind: str = "text"
    #: The error in Chinese, and the API's code for it.
    error: str = ""
    code: str = ""

    @property
    def id(self) -> str:
        return dom_id(self.name)

    @property
    def inputmode(self) -> str:
        if self.name.rsplit(".", 1)[-1] in _NUMERIC:
            return "numeric"
        return "decimal" if self.name == "price" else ""


@dataclass
class Section:
    """One platform's fields."""

    platform: str
    label: str
    #: Which fields it needs, said for a person ("抖店商品 ID，或 小程序 AppID + 页面路径").
    needs: str
    fields: list[FormField]
    error: str = ""
    code: str = ""

    @property
    def id(self) -> str:
        return dom_id(f"targets.{self.platform}")

    @property
    def filled(self) -> bool:
        return any(f.value for f in self.fields)

    @property
    def has_error(self) -> bool:
        return bool(self.error) or any(f.error for f in self.fields)


@dataclass
class ProductForm:
    fields: dict[str, FormField]
    sections: list[Section]
    #: Errors of the whole targets part ("fill in at least one platform").
    targets_error: str = ""
    targets_code: str = ""
    #: Every error, in the form's order: (element id, label, message), for the summary.
    summary: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def blank(cls) -> ProductForm:
        fields = {name: FormField(name, label, help_, example, kind=kind)
                  for name, label, help_, example, kind in BASE_FIELDS}
        sections = []
        for adapter in ADAPTERS:
            if not adapter.is_target:
                continue
            docs = [(name, adapter.field_doc(name)) for name in adapter.form_fields]
            needs = "，或 ".join(" + ".join(adapter.field_doc(f).label for f in group)
                                for group in adapter.target_fields)
            sections.append(Section(adapter.platform, adapter.label, needs, [
                FormField(f"targets.{adapter.platform}.{name}", doc.label, doc.help,
                          doc.example, kind="url" if name == "url" else "text")
                for name, doc in docs]))
        return cls(fields, sections)

    @classmethod
    def of_product(cls, product: Product, zone: tzinfo) -> ProductForm:
        form = cls.blank()
        values = {"title": product.title, "price": product.price or "",
                  "image_url": product.image_url or "", "slug": product.code,
                  "valid_from": local_moment(product.valid_from, zone),
                  "valid_until": local_moment(product.valid_until, zone)}
        for platform, target in product.targets.items():
            for name, value in target.items():
                values[f"targets.{platform}.{name}"] = value
        form.fill(values)
        return form

    @classmethod
    def posted(cls, data: Mapping[str, Any]) -> ProductForm:
        form = cls.blank()
        form.fill({k: v for k, v in data.items() if isinstance(v, str)})
        return form

    def fill(self, values: Mapping[str, str]) -> None:
        for one in self.all_fields():
            one.value = values.get(one.name, "")

    def all_fields(self) -> list[FormField]:
        return [*self.fields.values(), *(f for s in self.sections for f in s.fields)]

    def body(self, *, creating: bool) -> dict[str, Any]:
        """The API body this form says: a create's, or a change's (every editable field,
        so a field emptied here is emptied there; the slug never changes)."""
        body: dict[str, Any] = {}
        for name, one in self.fields.items():
            if name == "slug" and not creating:
                continue
            if name == "title" or one.value.strip() or not creating:
                body[name] = one.value
        targets: dict[str, dict[str, str]] = {}
        for section in self.sections:
            given = {f.name.rsplit(".", 1)[1]: f.value for f in section.fields
                     if f.value.strip()}
            if given:
                targets[section.platform] = given
        body["targets"] = targets
        return body

    def show_errors(self, errors: Sequence[ApiError], merchant: Merchant) -> None:
        """Put each error next to its field (or its platform, or the targets part)."""
        by_name = {f.name: f for f in self.all_fields()}
        sections = {f"targets.{s.platform}": s for s in self.sections}
        for error in errors:
            name = error.field or ""
            one = by_name.get(name)
            if one is not None:
                one.error, one.code = say(error, merchant, one.value), error.code
                self.summary.append((one.id, field_label(name), one.error))
            elif name in sections:
                section = sections[name]
                section.error, section.code = say(error, merchant), error.code
                self.summary.append((section.id, section.label, section.error))
            else:
                self.targets_error, self.targets_code = say(error, merchant), error.code
                self.summary.append(("targets", "商品信息", self.targets_error))
