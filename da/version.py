"""The one place the version lives, so /health and `da --version` agree."""

from __future__ import annotations

__version__ = "0.1.0"
