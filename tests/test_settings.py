"""Settings: one table, every key documented, unknown keys and bad values stop start-up."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.settings import SETTINGS, ConfigError, load_settings

from .conftest import REPO

EXAMPLE = REPO / "config" / "linkloop.example.toml"


def test_every_setting_is_documented_in_the_example_config() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    documented = {f"{section}.{key}": value for section, table in example.items()
                  for key, value in table.items()}
    assert set(documented) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        assert documented[setting.name] == setting.default, setting.name
        assert setting.help.strip(), setting.name
    # and the example itself loads cleanly
    load_settings(EXAMPLE, environ={})


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 9000\npublic_url = "https://go.example.com"\n')
    settings = load_settings(config, environ={"LINKLOOP_SERVER_PORT": "9100",
                                              "LINKLOOP_SERVER_TRUST_FORWARDED": "yes"})
    assert settings["server.port"] == 9100
    assert settings["server.public_url"] == "https://go.example.com"
    assert settings["server.trust_forwarded"] is True
    assert load_settings(environ={"LINKLOOP_CONFIG": str(config)})["server.port"] == 9000


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[server]\nprot = 1\n", {}, "unknown setting server.prot"),
    ("[sever]\nport = 1\n", {}, "unknown setting sever.port"),
    ("[server]\nport = \"eighty\"\n", {}, "server.port"),
    ("[server]\nport = -1\n", {}, "below the minimum"),
    ("[log]\nlevel = \"loud\"\n", {}, "log.level"),
    ("server = 1\n", {}, "must be a [section] table"),
    ("not toml at all [", {}, "not valid TOML"),
    ("", {"LINKLOOP_SERVER_PROT": "1"}, "LINKLOOP_SERVER_PROT"),
    ("", {"LINKLOOP_RECORDER_BATCH_SIZE": "many"}, "recorder.batch_size"),
])
def test_bad_settings_stop_startup_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config, environ=env)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml", environ={})
