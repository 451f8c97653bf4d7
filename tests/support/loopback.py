"""httpx clients for the tests' own services, which all listen on plain http on the loopback interface.

httpx builds a TLS context (the CA bundle loaded and parsed) for every client unless told not to verify:
about 30 ms of CPU, for a context a plain-http request never uses, and the suite makes hundreds of clients.
"""

from __future__ import annotations

from typing import Any

import httpx


def client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=False, **options)


def get(url: str, **options: Any) -> httpx.Response:
    return httpx.get(url, verify=False, **options)


def post(url: str, **options: Any) -> httpx.Response:
    return httpx.post(url, verify=False, **options)
