"""Secrets out of what is printed and logged: passwords inside URLs.

`SecretStr` fields (the MQTT password, API tokens) already print as ``**********``; but a URL
can carry a password too (``rtsp://user:pass@camera/stream``, the sink's
``postgresql+psycopg://sink:pass@db/sleepsafe``), and check-config output and logs end up in
tickets and journald.  The real values stay in the config for connecting.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# scheme://user:PASSWORD@ — the userinfo of a URL ends at the last "@" before the path (RFC 3986
# allows no "/" there), so a raw "@" inside a password is masked too.  Also matches a URL inside
# a longer string, e.g. a GStreamer pipeline's ``rtspsrc location=rtsp://u:p@cam/...``.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^/\s]*)@")


def mask_url_passwords(text: str) -> str:
    """``rtsp://cam:hunter2@10.0.0.5/s`` → ``rtsp://cam:***@10.0.0.5/s``; text without a URL
    password is returned unchanged."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@" if m["password"] else m[0], text)


def redacted(data: Any) -> Any:
    """A copy of a JSON-like structure (``model_dump(mode="json")``) with every URL password in
    every string masked."""
    if isinstance(data, str):
        return mask_url_passwords(data)
    if isinstance(data, dict):
        return {k: redacted(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v) for v in data]
    return data
