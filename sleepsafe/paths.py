"""Where the project keeps what it fetches and prepares on a machine (clips, prepared data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sleepsafe`` (``~/.cache/sleepsafe`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sleepsafe"
