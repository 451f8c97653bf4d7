"""A token pasted into a URL path never reaches the log verbatim (issue 24, bytes and names)."""

from __future__ import annotations

import logging

import httpx
import pytest

TOKEN = "daw_" + "A1b2C3d4" * 5 + "xyz"


async def test_a_token_in_a_refused_path_is_redacted_in_the_log(http: httpx.AsyncClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="da")
    refused = await http.get(f"/v1/tasks/{TOKEN}", headers={"x-secret-key": "wrong", "authorization": ""})
    assert refused.status_code == 401
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("da")]
    assert any("refused GET /v1/tasks/daw_[redacted]" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines)
