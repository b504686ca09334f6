"""Settings every SleepSafe daemon shares: one rule for sources (``--set`` > environment > TOML
file), unknown keys as errors, one-line messages naming the field, systemd credentials, and the
MQTT broker section that both ends use.

Unknown keys are errors everywhere: a typo in a safety threshold must not be silently ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

S = TypeVar("S", bound=BaseSettings)


class Section(BaseModel):
    """A section of a daemon's settings: unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BrokerConfig(Section):
    """How to reach the MQTT broker: shared by the edge agent and the sink."""

    host: str = Field("localhost", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 for TLS, by convention).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive.")
    username: str | None = Field(None, description="Username (unset: anonymous).")
    password: SecretStr | None = Field(
        None, description="Password (printed masked); prefer `password_credential`."
    )
    password_credential: str = Field(
        "mqtt-password",
        description="Name of the password file in $CREDENTIALS_DIRECTORY (systemd LoadCredential=); "
        "used when `password` is unset and the file exists and is not empty.",
    )
    ca_file: Path | None = Field(None, description="CA bundle: setting it turns TLS on.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client key (mutual TLS).")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay (jittered).")
    reconnect_max_s: float = Field(60.0, gt=0, description="Reconnect delay ceiling.")


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="'auto': JSON when stderr is not a terminal."
    )


class TomlSettings(BaseSettings):
    """Sources, highest priority first: ``--set`` overrides (init), environment, TOML file; the
    same rule for every daemon's settings."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def read_credential(name: str) -> str | None:
    """A secret from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd ``LoadCredential=``), or None
    when there is no such directory or file."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        return None
    path = Path(creds) / name
    return path.read_text() if path.is_file() else None


class ConfigError(Exception):
    """A configuration problem, as one line that names the field."""


def _format_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        value = e.get("input")
        shown = (
            ""
            if e["type"] in ("extra_forbidden", "missing") or isinstance(value, dict)
            else f" (got {value!r})"
        )
        parts.append(f"{loc}: {msg}{shown}")
    return "; ".join(parts)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["detector.microsleep_s=1.2", "device_id=bus-7"]`` → nested dict.  Values stay strings
    (pydantic converts them, so a bad one is reported against its field like any other), except
    JSON lists, e.g. ``alerts.command.argv=["/usr/bin/notify", "--loud"]``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. detector.microsleep_s=1.2")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p} is a value, not a section")
            node = nxt
        value = value.strip()
        if value.startswith("["):
            try:
                node[parts[-1]] = json.loads(value)
                continue
            except ValueError:
                raise ConfigError(f"override {item!r}: the list is not valid JSON") from None
        node[parts[-1]] = value
    return out


def load_settings(cls: type[S], path: Path | None, overrides: dict[str, Any] | None, default_path: Path) -> S:
    """Load and validate any of our settings classes (edge agent, sink).  ``path`` None means
    ``default_path``, used only if it exists; an explicit path that is missing is an error.
    Raises :class:`ConfigError` with one line naming the field."""
    toml: Path | None
    if path is None:
        toml = default_path if default_path.is_file() else None
    else:
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        toml = path

    class _FromFile(cls):  # type: ignore[valid-type,misc]
        model_config = SettingsConfigDict(toml_file=toml)

    try:
        cfg = _FromFile(**(overrides or {}))
    except ValidationError as err:
        where = f"{toml}: " if toml else ""
        raise ConfigError(f"{where}{_format_validation_error(err)}") from None
    except (OSError, ValueError) as err:  # TOML syntax errors are ValueErrors
        raise ConfigError(f"config file {toml}: {err}") from None
    return cfg  # type: ignore[no-any-return]
