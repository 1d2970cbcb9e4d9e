"""Every setting in one table: name, default, help.

Settings come from, lowest first: the defaults below, a TOML file (``--config`` or
``LINKLOOP_CONFIG``), then ``LINKLOOP_<SECTION>_<KEY>`` environment variables. An unknown key
or a value of the wrong kind stops start-up with a message naming it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "load_settings"]


class ConfigError(Exception):
    """A setting is unknown or has a bad value; the message names it."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # "section.key"
    default: Any
    help: str
    kind: type = str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_var(self) -> str:
        return "LINKLOOP_" + self.name.replace(".", "_").upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("server.host", "127.0.0.1", "Address the gateway listens on."),
    Setting("server.port", 8080, "TCP port the gateway listens on.", int, minimum=0),
    Setting("server.public_url", "",
            "Public base URL of share links, e.g. https://go.example.com. "
            "Empty: http://<host>:<port>."),
    Setting("server.max_body_bytes", 65536, "Largest API request body accepted.", int,
            minimum=1024),
    Setting("server.import_max_bytes", 4 * 1024 * 1024,
            "Largest CSV or XLSX file a product import accepts (API and console).", int,
            minimum=1024),
    Setting("server.body_idle_seconds", 10.0,
            "Longest wait for the next bytes of a request body (API, form, upload, WeCom "
            "callback; a form's whole body); past it the answer is 408 request_timeout and "
            "the connection closes, rather than a handler waiting for ever on a client that "
            "stalled or on a chunked body aiohttp stopped parsing.", float, minimum=0.1),
    Setting("server.trust_forwarded", False,
            "Take the client address from X-Forwarded-For (only behind your own proxy).", bool),
    Setting("storage.url", "",
            "Where data lives: sqlite:///path/to/file.db or postgresql://... "
            "Empty: SQLite under storage.data_dir."),
    Setting("storage.data_dir", "./data",
            "Directory for the SQLite file, generated secrets and the click journal."),
    Setting("storage.timeout_seconds", 5.0,
            "Longest one storage call may take (connecting, waiting for a connection or a "
            "lock, running its statements); past it the call fails as storage unavailable, "
            "so /readyz answers not-ready within this time when the database is silently "
            "unreachable. Exempt: migrations on start, and the rare commands over a whole "
            "history (privacy forget, rollups exported or imported, pruning on "
            "PostgreSQL, secrets resealed); on SQLite those that write still fail when "
            "the write lock stays taken this long.",
            float, minimum=0.1),
    Setting("storage.sketch_fold_visitors", 50_000,
            "Rows the click writer sets aside before it folds them, in either table: its "
            "clicks' visitors (into the unique-visitor sketches) and its per-day counts "
            "(into the rollups). It also folds a minute after its last fold; on PostgreSQL "
            "each gateway's writer counts its own, and its fold takes every gateway's. "
            "Reports count what is set aside too, so this changes no figure: larger folds "
            "rewrite each sketch and rollup row less often (less work per click), and "
            "reports read more pending rows.", int, minimum=1),
    Setting("auth.secret", "",
            "HS256 signing key for API tokens. Empty: generated once into data_dir."),
    Setting("auth.audience", "linkloop", "The `aud` claim tokens must carry."),
    Setting("auth.token_ttl_days", 30, "Default lifetime of tokens minted by `linkloop token`.",
            int, minimum=1),
    Setting("privacy.ip_salt", "",
            "Salt for hashing client addresses (raw addresses are never stored). "
            "Empty: generated once into data_dir."),
    Setting("secrets.key", "",
            "Key sealing the merchants' stored WeCom and WeChat secrets (AES-256-GCM): 32 "
            "bytes in URL-safe base64. Set the same on every host sharing a database. "
            "Empty: the key file."),
    Setting("secrets.key_file", "",
            "File of keys, one a line, newest first, used when secrets.key is empty; made "
            "with one new key if missing. Empty: secrets.key under data_dir."),
    Setting("secrets.previous_keys", "",
            "Older keys (comma-separated) that still open stored secrets while `linkloop "
            "secrets rotate` seals them all again under secrets.key."),
    Setting("retention.raw_clicks_days", 180,
            "Days raw clicks, events, visitor rows and worked WeCom callbacks are kept; "
            "older ones are deleted daily (rollups keep their counts). 0: kept for ever.",
            int, minimum=0),
    Setting("cache.link_ttl_seconds", 60.0,
            "Longest a cached share link is served before it is read again (in the "
            "background). Changes made through any instance reach every cache sooner.",
            float, minimum=0),
    Setting("cache.link_max_entries", 100_000, "Most share links kept in memory.", int,
            minimum=1),
    Setting("recorder.queue_size", 50_000,
            "Most clicks held in memory, when the click log can't take them (its disk full), "
            "awaiting a write; past this they go to the journal.",
            int, minimum=1),
    Setting("recorder.hold_size", 100_000,
            "Most clicks kept in memory in all (the queue's included, so at least "
            "queue_size) while neither storage nor the journal takes them; /readyz answers "
            "not-ready meanwhile. Past this a click is dropped and counted (/readyz "
            "`dropped`, log event recorder.clicks_dropped).", int, minimum=1),
    Setting("recorder.flush_interval_ms", 1000,
            "Longest a click waits in the click log before it is written (the stats lag by "
            "about this much). Longer: larger batches, less work per click.", int, minimum=1),
    Setting("recorder.batch_size", 20_000,
            "Most clicks written in one transaction; a writer that falls behind takes this "
            "many at once. Larger: a backlog costs less per click (its clicks share rollup "
            "rows and visitor sketch cells), but on SQLite each write holds the database's "
            "write lock longer.", int, minimum=1),
    Setting("recorder.writer_process", True,
            "Write clicks from a child process, so storage work never holds up requests; "
            "false: from a thread of the gateway process.", bool),
    Setting("recorder.writer_nice", 10,
            "Niceness of the writer process (0-19): how far the kernel puts it behind the "
            "requests when a CPU is contended. At 10, a spike that saturates the CPU is "
            "answered at nearly full speed while its clicks wait in the click log and are "
            "written after it; at 0 the writer keeps pace during the spike, at a lower "
            "throughput (bench/README.md has the figures).", int, minimum=0, maximum=19),
    Setting("recorder.retry_max_seconds", 30.0,
            "Longest pause between retries while the database is away.", float, minimum=0.1),
    Setting("wechat.api_base", "https://api.weixin.qq.com",
            "Base URL of WeChat's server API (tests point it at a local fake)."),
    Setting("wechat.timeout_seconds", 5.0, "Longest wait for one WeChat API call.", float,
            minimum=0.1),
    Setting("wechat.link_expire_days", 30,
            "Lifetime of minted mini-program URL Links and schemes (WeChat allows 1 to 30 "
            "days).", int, minimum=1),
    Setting("wechat.link_renew_days", 3.0,
            "Minted URL Links and schemes are minted again this many days before they expire "
            "(at most half their lifetime).", float, minimum=0),
    Setting("wechat.upkeep_interval_seconds", 60.0,
            "How often a gateway renews minted links that are due, retries failed mints and "
            "refreshes JS-SDK tickets that are about to expire.", float, minimum=0.05),
    Setting("wechat.jssdk_url", "https://res.wx.qq.com/open/js/jweixin-1.6.0.js",
            "WeChat's JS-SDK, loaded only by landing pages shown inside WeChat that carry the "
            "open tag (tests point it at a local fake)."),
    Setting("wecom.api_base", "https://qyapi.weixin.qq.com/cgi-bin",
            "Base URL of WeCom's server API (tests point it at a local fake)."),
    Setting("wecom.timeout_seconds", 5.0, "Longest wait for one WeCom API call.", float,
            minimum=0.1),
    Setting("wecom.callback_max_skew_seconds", 300,
            "Callbacks whose timestamp is further than this from now are refused.", int,
            minimum=1),
    Setting("stats.timezone", "Asia/Shanghai",
            "Time zone that decides which day a click counts on."),
    Setting("log.level", "info", "Lowest level logged.",
            choices=("debug", "info", "warning", "error")),
    Setting("log.format", "json", "json: one JSON object a line; console: for people.",
            choices=("json", "console")),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    where = f"{setting.name} (from {origin})"
    kind = setting.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                result: Any = value
            elif isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                result = True
            elif isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                result = False
            else:
                raise ValueError(value)
        elif kind is int:
            if isinstance(value, (bool, float)):
                raise ValueError(value)
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            result = float(value)
        else:
            if not isinstance(value, str):
                raise ValueError(value)
            result = value
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a valid {kind.__name__}") from None
    if setting.minimum is not None and result < setting.minimum:
        raise ConfigError(f"{where}: {result!r} is below the minimum {setting.minimum}")
    if setting.maximum is not None and result > setting.maximum:
        raise ConfigError(f"{where}: {result!r} is above the maximum {setting.maximum}")
    if setting.choices and result not in setting.choices:
        raise ConfigError(f"{where}: {result!r} is not one of {', '.join(setting.choices)}")
    return result


class Settings:
    """Resolved settings; read with ``settings["section.key"]``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some values replaced, checked like any other source."""
        values = dict(self._values)
        for key, value in overrides.items():
            name = key.replace("__", ".")
            setting = _BY_NAME.get(name)
            if setting is None:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(setting, value, "override")
        return Settings(values)

    @property
    def data_dir(self) -> Path:
        return Path(self["storage.data_dir"])


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then the environment. Unknown keys are errors."""
    environ = os.environ if environ is None else environ
    values = {s.name: s.default for s in SETTINGS}
    path = config_file or environ.get("LINKLOOP_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: {section!r} must be a [section] table")
            for key, value in table.items():
                setting = _BY_NAME.get(f"{section}.{key}")
                if setting is None:
                    raise ConfigError(f"{path}: unknown setting {section}.{key}")
                values[setting.name] = _coerce(setting, value, str(path))
    known_env = {s.env_var: s for s in SETTINGS}
    for var, value in environ.items():
        if not var.startswith("LINKLOOP_") or var == "LINKLOOP_CONFIG":
            continue
        setting = known_env.get(var)
        if setting is None:
            # Only names shaped like a setting are ours to refuse; others may be tools'.
            if var.count("_") >= 2 and not var.startswith("LINKLOOP_TEST_"):
                raise ConfigError(f"unknown setting in environment: {var}")
            continue
        values[setting.name] = _coerce(setting, value, var)
    return Settings(values)
