"""The API's errors in the words a merchant reads next to a field, in Chinese.

The code and the field come from the one validator (``catalog.product_errors``, the entry's
``validate_entry``): this module only says them again for a person, using what the adapter
declares about the field (its label, what it looks like, an example). The code stays on the
page too (``data-code``), so a test can see the console and the API agree.
"""

from __future__ import annotations

from adapters import by_platform

from ..errors import ApiError
from ..store import Merchant
from ..wecom.entry import MAX_IDS

__all__ = ["FIELD_LABELS", "field_label", "say"]

#: The product's own fields, as the form names them.
FIELD_LABELS = {
    "title": "商品标题",
    "price": "价格",
    "image_url": "图片网址",
    "slug": "链接短码",
    "valid_from": "开售时间",
    "valid_until": "结束时间",
    "targets": "各平台的商品信息",
    # The WeCom entry point.
    "kind": "入口类型",
    "url": "获客链接",
    "users": "成员账号",
    "chat_ids": "客户群 ID",
    "qr_url": "二维码图片网址",
    "corp_id": "企业 ID（corp_id）",
    "secret": "Secret",
    "callback_token": "回调 Token",
    "encoding_aes_key": "EncodingAESKey",
    "name": "渠道名",
    "label": "显示名称",
    "file": "文件",
}


def field_label(field: str | None) -> str:
    """What a field is called on the page: ``targets.jd.sku`` is 「京东 商品 SKU」."""
    if not field:
        return "填写的内容"
    parts = field.split(".")
    if parts[0] == "targets" and len(parts) >= 2:
        adapter = by_platform(parts[1])
        if adapter is None:
            return parts[1]
        if len(parts) == 2:
            return adapter.label
        return f"{adapter.label} {adapter.field_doc(parts[2]).label}"
    return FIELD_LABELS.get(field, field)


def _target_hint(field: str) -> str:
    """What a target field should look like, from its adapter's declaration."""
    _, platform, name = field.split(".", 2)
    adapter = by_platform(platform)
    if adapter is None:
        return ""
    doc = adapter.field_doc(name)
    hint = doc.help
    if doc.example:
        hint += f"，例如 {doc.example}"
    return hint


def _wanted(platform: str) -> str:
    """Which fields a platform needs, as alternatives (Douyin: a shop id, or a mini-program)."""
    adapter = by_platform(platform)
    if adapter is None:
        return ""
    return "，或".join(" + ".join(adapter.field_doc(f).label for f in group)
                      for group in adapter.target_fields)


def say(error: ApiError, merchant: Merchant | None = None, value: str = "") -> str:
    """``error`` in Chinese, shown beside the field it names (a target field's message leaves
    the field's name to its label there); ``value``: what was typed."""
    field = error.field or ""
    code = error.code
    label = field_label(field)
    is_target_field = field.startswith("targets.") and field.count(".") >= 2
    if code == "missing_field":
        if field == "targets":
            return "请至少填写一个平台的商品信息。"
        if field.startswith("targets.") and field.count(".") == 1:
            return f"{label}的信息不完整：请填写{_wanted(field.split('.')[1])}。"
        return f"请填写{label}。"
    if code == "host_not_allowed":
        if field == "targets.web.url":
            domains = "、".join(merchant.domains) if merchant and merchant.domains else ""
            return (f"网址必须在你店铺的域名上（{domains}）。" if domains else
                    "你的店铺还没有登记域名，请让管理员用 linkloop merchant update 添加。")
        if is_target_field:
            platform = by_platform(field.split(".")[1])
            if platform is None:
                return "网址不在允许的域名上。"
            return f"必须是{platform.label}自己的网址（{'、'.join(platform.owned_hosts)}）。"
        if field == "url":
            return "获客链接必须是企业微信的链接：https://work.weixin.qq.com/ca/…"
        return f"{label}的网址不在允许的域名上。"
    if code == "invalid_url":
        return f"{label}不是可用的网址：请填写 https:// 开头的完整网址，不带空格。"
    if code == "slug_taken":
        return "这个链接短码已被使用，请换一个。"
    if code == "immutable_field":
        return "链接短码创建后不能修改：已经发出去的链接会失效。"
    if code == "reserved_name":
        return "这个名字是平台名（如 taobao），会被当成顾客来自的平台，请换一个。"
    if code == "channel_exists":
        return "已经有这个名字的渠道了。"
    if code in ("unknown_field", "unknown_platform"):
        return f"不认识的项目「{field}」。"
    if is_target_field:
        return f"格式不对：{_target_hint(field)}。"
    return _field_message(field, label, value, error)


def _field_message(field: str, label: str, value: str, error: ApiError) -> str:
    if field == "title":
        if not value.strip():
            return "请填写商品标题。"
        if len(value.strip()) > 200:
            return "商品标题最多 200 个字。"
        return "商品标题只能是一行文字，不能有换行或特殊控制字符。"
    if field == "price":
        return "价格请填数字，最多两位小数，例如 99.90。"
    if field == "slug":
        return "链接短码 3–64 位，只能用字母、数字、- 和 _，并以字母或数字开头。"
    if field in ("valid_from", "valid_until"):
        if "later" in error.message:
            return "结束时间必须晚于开售时间。"
        if "2000" in error.message:
            return f"{label}必须在 2000 年到 2100 年之间。"
        return f"{label}格式不对：请选择日期和时间，例如 2026-06-18 20:00。"
    if field in ("users", "chat_ids"):
        if "at most" in error.message:
            return f"{label}太多了：企业微信的一个入口最多用 {MAX_IDS[field]} 个，请删掉多余的。"
        return f"{label}格式不对：每行一个，最多 {MAX_IDS[field]} 个。"
    if field in ("corp_id", "secret", "callback_token", "encoding_aes_key"):
        return f"{label}格式不对：请从企业微信管理后台原样复制。"
    if field == "label":
        return "显示名称最多 40 个字，只能是一行文字。"
    if field == "name":
        return "渠道名只能用小写字母、数字和下划线，最多 32 个字符，例如 spring_live。"
    return f"{label}填写有误。"
