"""The MQTT client both ends connect with: paho 2.x, MQTT 5, credentials and TLS from a
:class:`~sleepsafe.settings.BrokerConfig`, jittered reconnects."""

from __future__ import annotations

import random
from typing import Any

from .settings import BrokerConfig, read_credential


def resolve_password(cfg: BrokerConfig) -> str | None:
    """The real password for the broker login: ``password`` (a SecretStr, so it never prints),
    else the systemd credential file, else None."""
    if cfg.password is not None and cfg.password.get_secret_value():
        return cfg.password.get_secret_value()
    return (read_credential(cfg.password_credential) or "").strip() or None


def new_client(cfg: BrokerConfig, client_id: str, **kwargs: Any) -> Any:
    """A paho 2.x MQTT 5 client with credentials and TLS from ``cfg``; the edge publisher and the
    sink both connect this way."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs)
    if cfg.username:
        c.username_pw_set(cfg.username, resolve_password(cfg))
    if cfg.ca_file:
        c.tls_set(
            ca_certs=str(cfg.ca_file),
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )
    return c


def jitter_backoff(client: Any, cfg: BrokerConfig) -> None:
    """Jitter keeps a fleet (or a row of sinks) from reconnecting in lockstep after a broker
    restart; called again after each disconnect so every attempt gets a new draw."""
    lo = cfg.reconnect_min_s * random.uniform(0.5, 1.5)
    client.reconnect_delay_set(min_delay=max(1, round(lo)), max_delay=max(1, round(cfg.reconnect_max_s)))
