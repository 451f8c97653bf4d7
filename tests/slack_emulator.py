"""A local stand-in for Slack: the socket-mode websocket and the Web API methods the bot uses.

It speaks the real protocol to the real slack_bolt/slack_sdk client: `apps.connections.open`
hands out a ws:// URL, the socket sends `hello`, then envelopes with an `envelope_id` that
the client must ack; Web API calls and `response_url` posts are recorded for assertions.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from conftest import wait_until


@dataclass
class Envelope:
    envelope_id: str
    sent_at: float
    acked_at: float | None = None
    ack_payload: Any = None


@dataclass
class SlackEmulator:
    bot_token: str = "xoxb-test-bot-token"
    app_token: str = "xapp-test-app-token"
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    connections: int = 0
    server: TestServer | None = None
    socket: web.WebSocketResponse | None = None
    refuse_auth: bool = False
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self.api)
        app.router.add_get("/link", self.link)
        app.router.add_post("/respond/{id}", self.respond)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def stop(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.server is not None:
            await self.server.close()

    # ---- Web API ---------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
            for key in ("blocks", "view"):
                if isinstance(body.get(key), str):
                    body[key] = json.loads(body[key])
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append((method, body))
        if method == "apps.connections.open":
            if token != self.app_token:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.server.port}/link"})  # type: ignore[union-attr]
        if token != self.bot_token or self.refuse_auth:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": "T1",
                                      "user": "da", "team": "test", "url": "https://test.slack.com/"})
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            body["ts"] = ts
            self.messages[ts] = dict(body)
            return web.json_response({"ok": True, "channel": body.get("channel"), "ts": ts, "message": body})
        if method == "chat.update":
            self.messages[str(body.get("ts"))] = dict(body)
            return web.json_response({"ok": True, "channel": body.get("channel"), "ts": body.get("ts")})
        if method in ("chat.postEphemeral", "views.open"):
            return web.json_response({"ok": True, "message_ts": "1.1"})
        return web.json_response({"ok": False, "error": "unknown_method"})

    async def respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")

    # ---- socket mode -----------------------------------------------------------------

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self.socket = socket
        self.connections += 1
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            envelope = self.envelopes.get(data.get("envelope_id", ""))
            if envelope is not None and envelope.acked_at is None:
                envelope.acked_at = time.monotonic()
                envelope.ack_payload = data.get("payload")
        return socket

    async def connected(self, count: int = 1) -> None:
        await wait_until(self._has_connections(count), timeout=20)

    def _has_connections(self, count: int) -> Any:
        async def check() -> bool:
            return self.connections >= count and self.socket is not None and not self.socket.closed
        return check

    async def send(self, envelope_type: str, payload: dict[str, Any], *, envelope_id: str | None = None) -> Envelope:
        """Push one envelope and return its record (acked_at is set when the bot acks)."""
        await self.connected()
        envelope_id = envelope_id or uuid.uuid4().hex
        record = self.envelopes.setdefault(envelope_id, Envelope(envelope_id, time.monotonic()))
        record.sent_at = time.monotonic()
        record.acked_at = None
        assert self.socket is not None
        await self.socket.send_json({"type": envelope_type, "envelope_id": envelope_id, "payload": payload,
                                     "accepts_response_payload": envelope_type == "slash_commands",
                                     "retry_attempt": 0, "retry_reason": ""})
        return record

    def response_url(self) -> str:
        return f"{self.url}/respond/{uuid.uuid4().hex}"

    async def slash(self, text: str, *, user: str = "UALLOWED", channel: str = "CGENERAL") -> Envelope:
        return await self.send("slash_commands", {
            "token": "x", "team_id": "T1", "team_domain": "test", "channel_id": channel, "channel_name": "general",
            "user_id": user, "user_name": user.lower(), "command": "/da", "text": text, "api_app_id": "A1",
            "response_url": self.response_url(), "trigger_id": "trigger-1"})

    async def click(self, action_id: str, value: str, *, user: str = "UALLOWED", message: dict[str, Any] | None = None,
                    channel: str = "CGENERAL", ts: str | None = None, envelope_id: str | None = None,
                    selected: str | None = None) -> Envelope:
        action: dict[str, Any] = {"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                                  "action_ts": str(time.time())}
        if selected is not None:
            action = {"action_id": action_id, "block_id": "b", "type": "static_select",
                      "selected_option": {"value": selected, "text": {"type": "plain_text", "text": selected}},
                      "action_ts": str(time.time())}
        container: dict[str, Any] = {"type": "message", "channel_id": channel, "is_ephemeral": ts is None}
        if ts is not None:
            container["message_ts"] = ts
        return await self.send("interactive", {
            "type": "block_actions", "user": {"id": user, "username": user.lower(), "team_id": "T1"},
            "api_app_id": "A1", "team": {"id": "T1"}, "container": container, "channel": {"id": channel},
            "message": message or {"blocks": []}, "response_url": self.response_url(), "trigger_id": "trigger-2",
            "actions": [action]}, envelope_id=envelope_id)

    async def submit(self, callback_id: str, private_metadata: str, values: dict[str, Any], *,
                     user: str = "UALLOWED") -> Envelope:
        return await self.send("interactive", {
            "type": "view_submission", "user": {"id": user}, "team": {"id": "T1"}, "api_app_id": "A1",
            "view": {"id": "V1", "type": "modal", "callback_id": callback_id, "private_metadata": private_metadata,
                     "state": {"values": values}}})

    async def drop(self) -> None:
        """Cut the websocket, as a network blip or a Slack restart would."""
        assert self.socket is not None
        await self.socket.close()

    async def disconnect_message(self) -> None:
        """Slack's rotation notice: the client must reconnect to a new URL."""
        assert self.socket is not None
        await self.socket.send_json({"type": "disconnect", "reason": "refresh_requested",
                                     "debug_info": {"host": "emulator"}})

    # ---- assertions ------------------------------------------------------------------

    def named(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    async def wait_response(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next((r for r in self.responses if predicate(r)), None)
        return await wait_until(found, timeout=timeout)

    async def wait_call(self, method: str, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next((b for b in self.named(method) if predicate(b)), None)
        return await wait_until(found, timeout=timeout)

    async def wait_ack(self, envelope: Envelope, timeout: float = 5) -> float:
        async def acked() -> bool:
            return envelope.acked_at is not None
        await wait_until(acked, timeout=timeout)
        assert envelope.acked_at is not None
        return envelope.acked_at - envelope.sent_at
