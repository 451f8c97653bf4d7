"""A local stand-in for Slack, at least as strict as Slack: the socket-mode websocket, the Web API
methods the bot uses and `response_url`.

It speaks the real protocol to the real slack_bolt/slack_sdk client: `apps.connections.open`
hands out a ws:// URL, the socket sends `hello`, then envelopes with an `envelope_id` that the
client must ack within 3 s. Every message the bot shows is stored as Slack stores it (per
channel, ephemeral or not, with generated block ids and entity-escaped plain text), so a click
is built from what the user really saw, with the payload Slack really sends (an ephemeral
click carries no `message`).

Strictness, each fact with where Slack documents it in tests/SLACK_FACTS.md:
- slash text arrives with & < > escaped; slash envelopes carry no retry fields;
- chat.update refuses unknown or ephemeral ts (`message_not_found`) and messages the bot did
  not post with chat.* (`cant_update_message`);
- `response_url` serves 5 uses within 30 minutes, then 404; it validates blocks (400
  `invalid_blocks`, `msg_blocks_too_long`) and really replaces or deletes the original;
- Block Kit is validated (`invalid_blocks`), block text is capped at 12,000 characters in total
  (`msg_blocks_too_long`), text without blocks is required (`no_text`);
- chat.postMessage allows one message per second per channel (HTTP 429 with an integer
  `Retry-After`), chat.update and chat.delete are Tier 3 (50 a minute), postEphemeral and
  views.open Tier 4 (100 a minute);
- private channels and DMs the bot is not in answer `channel_not_found`; public channels
  need membership or `chat:write.public` (`not_in_channel`);
- views.open checks the trigger (format, single use, 3 s) and the modal's limits; views.publish
  needs the Home tab and a known user and checks a home view's limits;
- the scopes, event subscriptions, shortcuts and tabs are read from config/slack-manifest.yaml
  (a test may grant fewer scopes); a method without its scope answers `missing_scope` with
  `needed`/`provided`, every answer names the granted scopes in `X-OAuth-Scopes`, and an event
  whose scope is missing is never delivered;
- Events API: a person's message is stored as Slack stores it (& < > escaped, mentions as
  `<@U…>`) and delivered as a `message` event (where the app is a member and subscribed) and,
  when it mentions the bot outside a DM, also as an `app_mention` with another event_id; the
  bot's own posts, file shares and edits come back as message events; an event not acked in 3 s
  is delivered again with `retry_attempt` + 1 (and `redeliver()` repeats one on demand);
- files_upload_v2's three calls: files.getUploadURLExternal (query string, `length` > 0), the
  raw POST of the bytes, files.completeUploadExternal (only uploaded files, a postable channel,
  a real thread); conversations.replies and chat.getPermalink answer GET with the history scope
  of the conversation's kind; a post to a user id lands in the app's DM with them;
- people's files: `host()` uploads one and `say(files=...)` shares it (`subtype: file_share`, the
  file objects, or Slack Connect's stub that needs files.info); files.info (files:read, GET,
  `file_not_found`/`file_deleted`); url_private(_download) serves the bytes only for the bot token
  as `Authorization: Bearer` with files:read, else a 200 sign-in page; `downloads` records each try;
- usergroups.users.list (usergroups:read, GET, Tier 2, `no_such_subteam`) over `usergroups`;
- shortcuts (global: no channel, no response_url; message: the stored message) and clicks in
  modals and the App Home (`container.type` view, no response_url, no channel);
- faults on demand: a connection reset or a stall, before or after Slack did the work, a 5xx,
  a 429, or a body that is not JSON;
- the agent surfaces: chat.startStream / appendStream / stopStream (chunks validated, markdown_text
  and chunks exclusive, recipients required outside a DM, `message_not_in_streaming_state` once a
  stream ended, `stopped_by_user` after Stop, chat.update/chat.delete refused while it streams),
  assistant.threads.setStatus (cleared by the app's next reply or after 2 minutes) and
  agents.sessions.setStatus (`invalid_status`, title and initiator on creation only, the
  `missing_agent_session_stopped_event_subscription` warning); `press_stop()` is a person pressing
  Slack's own Stop button: the app's open streams in that thread stop and `agent_session_stopped`
  is delivered, the session's status untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.support import slack_limits
from tests.support.waiting import wait_until

MANIFEST = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "slack-manifest.yaml").read_text())
TEAM, APP_ID, BOT_USER, BOT_ID = "T1", "A1", "UBOT", "BBOT"
USERS = ("UALLOWED", "USTRANGER", "UOTHER")
# What the manifest grants and subscribes to.
MANIFEST_SCOPES = frozenset(MANIFEST["oauth_config"]["scopes"]["bot"])
MANIFEST_EVENTS = frozenset(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
SHORTCUTS = {s["callback_id"]: s["type"] for s in MANIFEST["features"]["shortcuts"]}
HOME_TAB = bool(MANIFEST["features"]["app_home"]["home_tab_enabled"])
MESSAGES_TAB = bool(MANIFEST["features"]["app_home"]["messages_tab_enabled"])
# The scope each subscription needs; without it Slack never delivers the event.
EVENT_SCOPES = {"app_mention": "app_mentions:read", "message.channels": "channels:history",
                "message.groups": "groups:history", "message.im": "im:history", "app_home_opened": None,
                "agent_session_stopped": None, "reaction_added": "reactions:read"}
# The message subscription and history scope of each conversation kind.
MESSAGE_EVENT = {"channel": "message.channels", "group": "message.groups", "im": "message.im"}
HISTORY_SCOPE = {"channel": "channels:history", "group": "groups:history", "im": "im:history"}
# Events are delivered again after a late ack, up to three times.
EVENT_RETRIES = 3
# views.publish refuses a view over 250 kB; alt_txt keeps 1,000 characters.
MAX_VIEW_BYTES = 250_000
MAX_ALT_TXT = 1000
# Methods the SDK calls with GET (and that Slack answers so).
GET_METHODS = ("auth.test", "chat.getPermalink", "conversations.replies", "usergroups.users.list", "files.info")
# response_url: "up to 5 times within 30 minutes of the user's invocation".
RESPONSE_URL_USES = 5
RESPONSE_URL_LIFETIME = 30 * 60
# Acks and triggers are good for 3 seconds.
ACK_DEADLINE = 3.0
TRIGGER_LIFETIME = 3.0
# (calls, window in seconds) per method for the whole workspace; chat.postMessage is limited per channel.
TIERS: dict[str, tuple[int, float]] = {
    "chat.update": (50, 60.0), "chat.delete": (50, 60.0), "apps.connections.open": (50, 60.0),
    "conversations.replies": (50, 60.0),
    "chat.postEphemeral": (100, 60.0), "views.open": (100, 60.0), "views.update": (100, 60.0),
    "views.publish": (100, 60.0), "files.getUploadURLExternal": (100, 60.0),
    "files.completeUploadExternal": (100, 60.0),
    # The agent surfaces: startStream and stopStream Tier 2, appendStream Tier 4, sessions Tier 3;
    # assistant.threads.setStatus has a "special" limit Slack does not state (none is enforced).
    "chat.startStream": (20, 60.0), "chat.stopStream": (20, 60.0), "chat.appendStream": (100, 60.0),
    "agents.sessions.setStatus": (50, 60.0),
    # usergroups.users.list is Tier 2; files.info Tier 4 (tests/SLACK_FACTS.md section 8 and 11).
    "usergroups.users.list": (20, 60.0), "files.info": (100, 60.0),
}
POST_INTERVAL = 1.0
DEFAULT_SCOPES = MANIFEST_SCOPES
# What an app made from the manifest before conversations had (slash commands only).
LEGACY_SCOPES = frozenset({"commands", "chat:write", "chat:write.public"})

# Streaming (tests/SLACK_FACTS.md section 10).
CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
DISPLAY_MODES = frozenset({"timeline", "plan"})
# markdown_text holds 12,000 characters per call; a task's title about 256 (UNCONFIRMED, measured by others).
MAX_MARKDOWN = 12_000
MAX_TASK_TITLE = 256
# A stream ends by itself about 5 minutes after it started (UNCONFIRMED: others measured ~306 s).
STREAM_LIFETIME = 300.0
# Thread status: at most 10 loading messages; cleared after 2 minutes without a message.
MAX_LOADING_MESSAGES = 10
THREAD_STATUS_LIFETIME = 120.0
SESSION_STATUSES = frozenset({"active", "processing", "suspended", "closed"})
MAX_SESSION_TITLE = 200

# How late a `slow` fault answers: well inside the SDK's timeout, long enough to stop a bot meanwhile.
SLOW_ANSWER = 1.0

@dataclass
class Channel:
    id: str
    name: str
    private: bool = False
    bot_member: bool = True
    members: set[str] = field(default_factory=lambda: set(USERS))
    archived: bool = False
    # A DM between the app and this user (the app's Messages tab).
    im_user: str | None = None

    @property
    def kind(self) -> str:
        """The event's `channel_type`: channel (public), group (private) or im."""
        if self.im_user is not None:
            return "im"
        return "group" if self.private else "channel"


@dataclass
class Message:
    """One message as Slack stores it; `versions` keeps every form it has shown."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    ephemeral_to: str | None = None
    by_bot_token: bool = True
    thread_ts: str | None = None
    deleted: bool = False
    versions: list[list[dict[str, Any]]] = field(default_factory=list)
    # A person's message: who wrote it (its text is stored escaped, as Slack stores it).
    author: str | None = None
    # A file share: the files it shows (subtype file_share).
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return self.ephemeral_to is not None

    def stored(self) -> dict[str, Any]:
        """The message as Slack hands it out (a block_actions `message`, conversations.replies, events)."""
        body: dict[str, Any] = {"type": "message", "text": self.text, "ts": self.ts, "team": TEAM,
                                "blocks": json.loads(json.dumps(self.blocks))}
        if self.author is not None:
            body.update(user=self.author, client_msg_id=str(uuid.uuid5(uuid.NAMESPACE_URL, self.ts)))
            if self.files:
                # A person's file share: subtype file_share, the file objects, upload true.
                body.update(subtype="file_share", files=json.loads(json.dumps(self.files)), upload=True,
                            display_as_bot=False)
        elif self.files:
            body.update(subtype="file_share", user=BOT_USER, files=json.loads(json.dumps(self.files)), upload=False,
                        display_as_bot=False)
        elif self.by_bot_token:
            body.update(user=BOT_USER, bot_id=BOT_ID, app_id=APP_ID,
                        bot_profile={"id": BOT_ID, "app_id": APP_ID, "name": "da", "team_id": TEAM})
        else:
            body.update(subtype="bot_message", bot_id=BOT_ID)
        if self.thread_ts:
            body["thread_ts"] = self.thread_ts
        return body


@dataclass
class ResponseUrl:
    kind: str  # "command" or "action"
    channel: str
    user: str
    created: float
    source: tuple[str, str] | None = None
    uses: int = 0


@dataclass
class Envelope:
    envelope_id: str
    kind: str
    sent_at: float
    acked_at: float | None = None
    ack_payload: Any = None
    trigger_id: str | None = None
    # The input block ids of a submitted view: the only keys a `response_action: errors` ack may use.
    inputs: frozenset[str] | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    retry_attempt: int = 0
    # Which connection (1, 2, ...) it went out on.
    via: int = 0
    # The connection closed before the ack was due (Slack gives an event to another connection later).
    dropped: bool = False

    @property
    def late(self) -> bool:
        if self.acked_at is None and self.dropped and self.kind == "events_api":
            return False
        return self.acked_at is None or self.acked_at - self.sent_at > ACK_DEADLINE

    def ack_problem(self) -> str | None:
        """Why Slack would not show this ack's answer, if it would not."""
        payload = self.ack_payload
        if not isinstance(payload, dict) or not payload:
            return None
        if self.kind == "interactive" and self.inputs is None:
            return "a click's ack carries no answer; Slack ignores it"
        if payload.get("response_action") == "errors":
            keys = set(payload.get("errors") or {})
            if not keys or not keys <= (self.inputs or frozenset()):
                return f"errors keyed by {sorted(keys)}, not by the view's input blocks {sorted(self.inputs or [])}"
        return None


@dataclass
class Call:
    """One Web API request and how the emulator answered it."""

    method: str
    args: dict[str, Any]
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class Fault:
    method: str
    kind: str  # reset | stall | 500 | 503 | 429 | bad_json
    after: bool = False  # True: Slack did the work, then the connection failed
    times: int = 1


class SlackError(Exception):
    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.status, self.extra = error, status, extra


@dataclass
class Upload:
    """A file between files.getUploadURLExternal and files.completeUploadExternal."""

    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str = ""
    shared: bool = False

    def shown(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.filename, "title": self.title or self.filename,
                "mimetype": "text/plain", "filetype": "text", "size": len(self.data or b""),
                "permalink": f"https://test.slack.com/files/{BOT_USER}/{self.id}/{self.filename}"}


@dataclass
class Hosted:
    """A file a person uploaded: what files.info describes and the download URL serves."""

    id: str
    name: str
    mimetype: str
    data: bytes
    user: str
    channel: str
    created: int
    deleted: bool = False

    def described(self, base: str) -> dict[str, Any]:
        """The file object (docs.slack.dev /reference/objects/file-object)."""
        download = f"{base}/files-pri/{TEAM}-{self.id}/download/{self.name}"
        return {"id": self.id, "created": self.created, "timestamp": self.created, "name": self.name,
                "title": self.name, "mimetype": self.mimetype, "filetype": self.name.rpartition(".")[2] or "binary",
                "pretty_type": self.mimetype, "user": self.user, "user_team": TEAM, "editable": False,
                "size": len(self.data), "mode": "hosted", "is_external": False, "external_type": "",
                "is_public": not self.channel.startswith(("G", "D")), "public_url_shared": False,
                "display_as_bot": False, "username": "",
                "url_private": f"{base}/files-pri/{TEAM}-{self.id}/{self.name}", "url_private_download": download,
                "permalink": f"https://test.slack.com/files/{self.user}/{self.id}/{self.name}",
                "has_rich_preview": False, "file_access": "visible"}


@dataclass
class Stream:
    """A streamed message as the person sees it: its text, its tasks by id, the plan's title."""

    channel: str
    ts: str
    thread_ts: str
    started: float
    display_mode: str = "timeline"
    # streaming | stopped | stopped_by_user (Stop pressed) | expired (Slack ended it)
    state: str = "streaming"
    # How it was opened (markdown_text or chunks; "" until the first content): later calls keep to it.
    shape: str = ""
    text: str = ""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan_title: str = ""
    chunks: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    @property
    def open(self) -> bool:
        return self.state == "streaming"


@dataclass
class ThreadStatus:
    status: str
    loading_messages: list[str]
    since: float


@dataclass
class AgentSession:
    """An agent session of one thread: created by the first setStatus, title and initiator kept from then."""

    channel: str
    thread_ts: str
    status: str
    title: str = ""
    initiator: str = ""
    history: list[str] = field(default_factory=list)


@dataclass
class SlackEmulator:
    bot_token: str = "xoxb-test-bot-token"
    app_token: str = "xapp-test-app-token"
    scopes: set[str] = field(default_factory=lambda: set(DEFAULT_SCOPES))
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    response_attempts: list[tuple[dict[str, Any], int, str]] = field(default_factory=list)
    envelopes: dict[str, Envelope] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    messages: dict[tuple[str, str], Message] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The Home tab each user last saw (views.publish), and the uploads by file id.
    homes: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    events: set[str] = field(default_factory=lambda: set(MANIFEST_EVENTS))
    tiers: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(TIERS))
    post_interval: float = POST_INTERVAL
    faults: list[Fault] = field(default_factory=list)
    connections: int = 0
    server: TestServer | None = None
    socket: web.WebSocketResponse | None = None
    refuse_auth: bool = False
    clock_offset: float = 0.0
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _urls: dict[str, ResponseUrl] = field(default_factory=dict)
    _triggers: dict[str, tuple[float, bool]] = field(default_factory=dict)
    _last_post: dict[str, float] = field(default_factory=dict)
    _tier_calls: dict[str, deque[float]] = field(default_factory=dict)
    _shown: list[tuple[dict[str, Any], Message, int]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _on_socket: list[Envelope] = field(default_factory=list)
    streams: dict[tuple[str, str], Stream] = field(default_factory=dict)
    thread_statuses: dict[tuple[str, str], ThreadStatus] = field(default_factory=dict)
    sessions: dict[tuple[str, str], AgentSession] = field(default_factory=dict)
    # Method names this workspace does not offer (answered `unknown_method`), e.g. the streaming ones.
    unknown_methods: set[str] = field(default_factory=set)
    # User groups by id (S…): their members' ids (usergroups.users.list).
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    # Files people uploaded, by id; and each download of one: (file id, the Authorization header sent).
    hosted: dict[str, Hosted] = field(default_factory=dict)
    downloads: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for channel in (Channel("CGENERAL", "general"), Channel("CNOTIFY", "da-alerts"),
                        Channel("COUTSIDE", "random", bot_member=False),
                        Channel("GPRIVATE", "secret-project", private=True, bot_member=False),
                        Channel("GTEAM", "team-private", private=True),
                        Channel("DUSER", "", private=True, bot_member=False, members={"UALLOWED", "UOTHER"})):
            self.channels[channel.id] = channel
        for user in USERS:
            self.channels[f"D{user}"] = Channel(f"D{user}", "", private=True, members={user}, im_user=user)

    def im_of(self, user: str) -> str:
        """The id of the app's DM with `user` (its Messages tab)."""
        return f"D{user}"

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.api)
        app.router.add_get("/link", self.link)
        app.router.add_post("/respond/{id}", self.respond)
        app.router.add_post("/upload/{id}", self.upload)
        app.router.add_get("/files-pri/{key}/download/{name}", self.download)
        app.router.add_get("/files-pri/{key}/{name}", self.download)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()

    async def stop(self) -> None:
        self._stop.set()
        for task in list(self._background):
            task.cancel()
        if self.socket is not None:
            await self.socket.close()
        if self.server is not None:
            await self.server.close()

    # ---- faults ------------------------------------------------------------------------

    def inject(self, method: str, kind: str, *, after: bool = False, times: int = 1) -> None:
        """Make the next `times` calls of `method` fail: reset, stall, 500, 503, 429 or bad_json; or, with
        `after`, answer `slow` (right, SLOW_ANSWER seconds late)."""
        self.faults.append(Fault(method, kind, after, times))

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("connection reset by the emulator")
        if fault.kind == "stall":
            # Past any client timeout: the call hangs until the client gives up (or the emulator stops).
            with_timeout = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([with_timeout], timeout=120)
            with_timeout.cancel()
            return web.json_response({"ok": False, "error": "request_timeout"})
        if fault.kind == "429":
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"})
        if fault.kind == "bad_json":
            return web.Response(text='{"ok": true, "chan', content_type="application/json")
        return web.json_response({"ok": False, "error": "internal_error" if fault.kind == "500" else
                                  "service_unavailable"}, status=int(fault.kind))

    # ---- Web API ---------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        for key in ("blocks", "view", "attachments", "metadata", "files"):
            if isinstance(args.get(key), str) and args[key][:1] in "[{":
                args[key] = json.loads(args[key])
        call = Call(method, args)
        self.calls.append(call)
        fault = self._take_fault(method)
        if fault is not None and not fault.after:
            call.status, call.error = 0, f"fault:{fault.kind}"
            return await self._fail(request, fault)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        # Every answer to a bot token names the scopes it was granted (slack-ruby-client#378).
        headers = {"X-OAuth-Scopes": ",".join(sorted(self.scopes))} if token == self.bot_token else {}
        try:
            answer = self._dispatch(method, request.method, token, args)
        except SlackError as exc:
            call.status, call.error = exc.status, exc.error
            if exc.status == 429:
                headers["Retry-After"] = str(exc.extra.pop("retry_after"))
            return web.json_response({"ok": False, "error": exc.error, **exc.extra}, status=exc.status,
                                     headers=headers)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(SLOW_ANSWER)  # a busy Slack: the work is done, the answer comes late
        elif fault is not None:
            call.error = f"fault-after:{fault.kind}"
            return await self._fail(request, fault)
        return web.json_response({"ok": True, **answer}, headers=headers)

    def _dispatch(self, method: str, verb: str, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "apps.connections.open":
            if verb != "POST":
                raise SlackError("insecure_request")
            if token != self.app_token:
                raise SlackError("invalid_auth")
            self._rate_tier(method)
            return {"url": f"ws://127.0.0.1:{self.server.port}/link"}  # type: ignore[union-attr]
        if token != self.bot_token or self.refuse_auth:
            raise SlackError("invalid_auth")
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None or method in self.unknown_methods:
            raise SlackError("unknown_method")
        if verb != "POST" and method not in GET_METHODS:
            raise SlackError("invalid_post_type")
        self._rate_tier(method)
        result: dict[str, Any] = handler(args)
        return result

    def _rate_tier(self, method: str) -> None:
        limit = self.tiers.get(method)
        if limit is None:
            return
        count, window = limit
        now = self.now()
        recent = self._tier_calls.setdefault(method, deque())
        while recent and now - recent[0] >= window:
            recent.popleft()
        if len(recent) >= count:
            raise SlackError("ratelimited", 429, retry_after=max(1, math.ceil(recent[0] + window - now)))
        recent.append(now)

    def _need_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise SlackError("missing_scope", needed=scope, provided=",".join(sorted(self.scopes)))

    def _postable(self, channel_id: str, *, user: str | None = None) -> Channel:
        """The channel if the bot may post there; Slack hides private channels the bot is not in."""
        channel = self.channels.get(channel_id)
        if channel is None or (channel.private and not channel.bot_member):
            raise SlackError("channel_not_found")
        if channel.archived:
            raise SlackError("is_archived")
        if not channel.bot_member and "chat:write.public" not in self.scopes:
            raise SlackError("not_in_channel")
        return channel

    def _check_content(self, args: dict[str, Any]) -> None:
        blocks = args.get("blocks")
        text = args.get("text")
        if not text and not blocks:
            raise SlackError("no_text")
        if blocks is not None:
            errors = slack_limits.block_errors(blocks)
            if errors:
                raise SlackError("invalid_blocks", errors=errors,
                                 response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
            if slack_limits.total_text(blocks) > slack_limits.MAX_BLOCKS_TEXT:
                raise SlackError("msg_blocks_too_long")

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _store(self, channel: str, text: str, blocks: list[Any] | None, **fields: Any) -> Message:
        message = Message(channel, self.next_ts(), text, normalise(blocks or []), **fields)
        message.versions.append(message.blocks)
        self.messages[(channel, message.ts)] = message
        return message

    def _shows(self, body: dict[str, Any], message: Message) -> None:
        self._shown.append((body, message, len(message.versions) - 1))

    def m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://test.slack.com/", "team": "test", "user": "da", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("chat:write")
        target = str(args.get("channel", ""))
        if target in USERS:
            # A user id posts in the app's DM with that user, its Messages tab.
            if not MESSAGES_TAB:
                raise SlackError("messages_tab_disabled")
            target = self.im_of(target)
        channel = self._postable(target)
        self._check_content(args)
        thread_ts = args.get("thread_ts")
        if thread_ts is not None:
            self._thread_parent(channel.id, str(thread_ts))
        last = self._last_post.get(channel.id)
        now = self.now()
        if last is not None and now - last < self.post_interval:
            raise SlackError("ratelimited", 429, retry_after=max(1, math.ceil(last + self.post_interval - now)))
        self._last_post[channel.id] = now
        text = str(args.get("text") or "")[: slack_limits.POST_TEXT_TRUNCATE]
        message = self._store(channel.id, text, args.get("blocks"), thread_ts=thread_ts)
        self._shows(args, message)
        args["ts"] = message.ts
        if thread_ts is not None:
            self.thread_statuses.pop((channel.id, str(thread_ts)), None)
        self._echo(message)
        return {"channel": channel.id, "ts": message.ts, "message": message.stored()}

    def m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("chat:write")
        channel = self._postable(str(args.get("channel", "")))
        message = self.messages.get((channel.id, str(args.get("ts", ""))))
        # An ephemeral ts answers message_not_found (exact code UNCONFIRMED; "can't be updated" is documented).
        if message is None or message.deleted or message.ephemeral:
            raise SlackError("message_not_found")
        if not message.by_bot_token:
            raise SlackError("cant_update_message")
        self._not_streaming(channel.id, message.ts)
        self._check_content(args)
        text = args.get("text")
        if text is not None and len(str(text)) > slack_limits.UPDATE_TEXT_MAX:
            raise SlackError("msg_too_long")
        if text is not None:
            message.text = str(text)
        if args.get("blocks") is not None:
            message.blocks = normalise(args["blocks"])
        message.versions.append(message.blocks)
        self._shows(args, message)
        self._echo(message, edited=True)
        return {"channel": channel.id, "ts": message.ts, "text": message.text,
                "message": {"text": message.text, "user": BOT_USER, "bot_id": BOT_ID, "blocks": message.blocks}}

    def m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._postable(str(args.get("channel", "")))
        message = self.messages.get((channel.id, str(args.get("ts", ""))))
        if message is None or message.deleted or message.ephemeral:
            raise SlackError("message_not_found")
        if not message.by_bot_token:
            raise SlackError("cant_delete_message")
        self._not_streaming(channel.id, message.ts)
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("chat:write")
        channel = self._postable(str(args.get("channel", "")))
        user = str(args.get("user", ""))
        if user not in channel.members:
            raise SlackError("user_not_in_channel")
        self._check_content(args)
        thread_ts = args.get("thread_ts") or None
        message = self._store(channel.id, str(args.get("text") or ""), args.get("blocks"), ephemeral_to=user,
                              thread_ts=thread_ts)
        self._shows(args, message)
        return {"message_ts": message.ts}

    def m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id", ""))
        if trigger not in self._triggers:
            raise SlackError("invalid_trigger_id")
        issued, used = self._triggers[trigger]
        if used:
            raise SlackError("exchanged_trigger_id")
        if self.now() - issued > TRIGGER_LIFETIME:
            raise SlackError("expired_trigger_id")
        view = args.get("view")
        errors = slack_limits.view_errors(view)
        if errors:
            raise SlackError("invalid_arguments", response_metadata={"messages": errors})
        self._triggers[trigger] = (issued, True)
        assert isinstance(view, dict)
        stored = stored_view(view)
        self.views[stored["id"]] = stored
        return {"view": stored}

    def m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user_id") or "")
        if user not in USERS:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["invalid `user_id`"]})
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] views.publish takes a view of type home [json-pointer:/view/type]"]})
        if not HOME_TAB:
            raise SlackError("not_enabled")
        errors = slack_limits.home_errors(view)
        if errors:
            raise SlackError("invalid_arguments", response_metadata={"messages": errors})
        if len(json.dumps(view).encode()) > MAX_VIEW_BYTES:
            raise SlackError("view_too_large")
        current = self.homes.get(user)
        if args.get("hash") and (current is None or current["hash"] != args["hash"]):
            raise SlackError("hash_conflict")
        stored = stored_view(view, view_id=current["id"] if current else None)
        self.homes[user] = stored
        self.views[stored["id"]] = stored
        return {"view": stored}

    # ---- streaming, thread status, agent sessions (tests/SLACK_FACTS.md section 10) ---

    def _not_streaming(self, channel: str, ts: str) -> None:
        """chat.update and chat.delete refuse a message that is still streaming (code UNCONFIRMED)."""
        stream = self.streams.get((channel, ts))
        if stream is not None and self._stream_open(stream):
            raise SlackError("streaming_state_conflict")

    def _stream_open(self, stream: Stream) -> bool:
        if stream.open and self.now() - stream.started > STREAM_LIFETIME:
            stream.state = "expired"
        return stream.open

    def _content_of(self, args: dict[str, Any], *, required: bool) -> tuple[str | None, list[dict[str, Any]] | None]:
        """The markdown_text or chunks of a streaming call, validated; both at once is refused."""
        text, chunks = args.get("markdown_text"), args.get("chunks")
        if isinstance(chunks, str):
            try:
                chunks = json.loads(chunks)
            except ValueError:
                raise SlackError("invalid_chunks") from None
        if text is not None and chunks is not None:
            raise SlackError("cannot_provide_both_markdown_text_and_chunks")
        if required and not text and not chunks:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] markdown_text or chunks is required"]})
        if text is not None and len(str(text)) > MAX_MARKDOWN:
            raise SlackError("msg_too_long")
        if chunks is not None:
            errors = chunk_errors(chunks)
            if errors:
                raise SlackError("invalid_chunks", response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
        return (str(text) if text is not None else None), chunks

    def _show_stream(self, stream: Stream, text: str | None, chunks: list[dict[str, Any]] | None) -> None:
        """What the person sees grow: text appended, a task's title and status replaced (details appended)."""
        stream.calls += 1
        for chunk in [{"type": "markdown_text", "text": text}] if text else chunks or []:
            stream.chunks.append(chunk)
            if chunk["type"] == "markdown_text":
                stream.text += chunk["text"]
            elif chunk["type"] == "plan_update":
                stream.plan_title = chunk["title"]
            elif chunk["type"] == "task_update":
                task = stream.tasks.setdefault(chunk["id"], {"id": chunk["id"], "details": ""})
                task.update(title=chunk["title"], status=chunk["status"])
                task["details"] += chunk.get("details") or ""
                if chunk.get("output") is not None:
                    task["output"] = chunk["output"]
        message = self.messages[(stream.channel, stream.ts)]
        message.text = stream.text

    def _stream_of(self, args: dict[str, Any]) -> Stream:
        """The stream a call names; the Stop button and Slack's own end answer as Slack does."""
        self._need_scope("chat:write")
        channel = self._postable(str(args.get("channel") or ""))
        ts = str(args.get("ts") or "")
        message = self.messages.get((channel.id, ts))
        if message is None or message.deleted or message.ephemeral:
            raise SlackError("message_not_found")
        stream = self.streams.get((channel.id, ts))
        if stream is None:
            raise SlackError("message_not_in_streaming_state")
        if not self._stream_open(stream):
            stopped = stream.state == "stopped_by_user"
            raise SlackError("stopped_by_user" if stopped else "message_not_in_streaming_state")
        return stream

    def m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("chat:write")
        channel = self._postable(str(args.get("channel") or ""))
        thread_ts = args.get("thread_ts")
        # The SDK requires thread_ts and Slack says streams "should always be replies": required here (stricter).
        if not thread_ts:
            raise SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] thread_ts is required"]})
        self._thread_parent(channel.id, str(thread_ts))
        if channel.kind != "im":
            if not args.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
            if not args.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if args["recipient_user_id"] not in channel.members:
                raise SlackError("user_not_in_channel")
        mode = args.get("task_display_mode", "timeline")
        if mode not in DISPLAY_MODES:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] task_display_mode must be timeline or plan"]})
        text, chunks = self._content_of(args, required=False)
        message = self._store(channel.id, "", None, thread_ts=str(thread_ts))
        stream = Stream(channel.id, message.ts, str(thread_ts), self.now(), display_mode=str(mode))
        self._keeps_shape(stream, text, chunks)
        self.streams[(channel.id, message.ts)] = stream
        self._show_stream(stream, text, chunks)
        self.thread_statuses.pop((channel.id, str(thread_ts)), None)
        self._echo(message)
        return {"channel": channel.id, "ts": message.ts}

    def _keeps_shape(self, stream: Stream, text: str | None, chunks: list[dict[str, Any]] | None) -> None:
        # A stream stays in the shape it opened with: markdown_text or chunks (UNCONFIRMED, measured by others).
        shape = "markdown_text" if text is not None else "chunks" if chunks else ""
        if shape and stream.shape and shape != stream.shape:
            raise SlackError("streaming_mode_mismatch")
        stream.shape = stream.shape or shape

    def m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream_of(args)
        text, chunks = self._content_of(args, required=True)
        self._keeps_shape(stream, text, chunks)
        self._show_stream(stream, text, chunks)
        return {"channel": stream.channel, "ts": stream.ts}

    def m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream_of(args)
        text, chunks = self._content_of(args, required=False)
        self._keeps_shape(stream, text, chunks)
        blocks = args.get("blocks")
        if blocks is not None:
            errors = slack_limits.block_errors(blocks)
            if errors:
                raise SlackError("invalid_blocks", errors=errors)
        session_status = args.get("session_status")
        if session_status is not None and session_status not in SESSION_STATUSES:
            raise SlackError("invalid_status")
        self._show_stream(stream, text, chunks)
        stream.state = "stopped"
        message = self.messages[(stream.channel, stream.ts)]
        if blocks:
            message.blocks = normalise(blocks)
            message.versions.append(message.blocks)
            self._shows(args, message)
        session = self.sessions.get((stream.channel, stream.thread_ts))
        # stopStream moves a processing session on (to session_status; `active` when none is named: UNCONFIRMED).
        if session is not None and (session_status or session.status == "processing"):
            self._set_session(session, str(session_status or "active"))
        return {"channel": stream.channel, "ts": stream.ts, "message": message.stored()}

    def m_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        if "chat:write" not in self.scopes and "assistant:write" not in self.scopes:
            self._need_scope("chat:write")
        for name in ("channel_id", "thread_ts", "status"):
            if args.get(name) is None:
                raise SlackError("invalid_arguments", response_metadata={"messages": [
                    f"[ERROR] missing required field: {name}"]})
        channel = self.channels.get(str(args["channel_id"]))
        if channel is None or not channel.bot_member:
            raise SlackError("channel_not_found")
        parent = self.messages.get((channel.id, str(args["thread_ts"])))
        if parent is None or parent.deleted or parent.ephemeral or (parent.thread_ts and parent.thread_ts != parent.ts):
            raise SlackError("invalid_thread_ts")
        loading = args.get("loading_messages") or []
        if not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                f"[ERROR] loading_messages holds at most {MAX_LOADING_MESSAGES} messages"]})
        key = (channel.id, parent.ts)
        if args["status"]:
            self.thread_statuses[key] = ThreadStatus(str(args["status"]), [str(m) for m in loading], self.now())
        else:
            self.thread_statuses.pop(key, None)
        return {}

    def thread_status(self, channel: str, thread_ts: str) -> str:
        """The status line a person sees under the thread now ("" when none)."""
        found = self.thread_statuses.get((channel, thread_ts))
        if found is None or self.now() - found.since > THREAD_STATUS_LIFETIME:
            return ""
        return found.status

    def _set_session(self, session: AgentSession, status: str) -> None:
        session.status = status
        session.history.append(status)

    def m_agents_sessions_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("chat:write")
        # Only apps declared as agents (which adds assistant:write) create sessions.
        self._need_scope("assistant:write")
        status = args.get("status")
        if status not in SESSION_STATUSES:
            raise SlackError("invalid_status")
        channel_id, thread_ts = args.get("channel_id"), args.get("thread_ts")
        if not channel_id or not thread_ts:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "[ERROR] channel_id and thread_ts are required for a thread-based session"]})
        channel = self.channels.get(str(channel_id))
        if channel is None or not channel.bot_member:
            raise SlackError("channel_not_found")
        parent = self._thread_parent(channel.id, str(thread_ts))
        key = (channel.id, parent.ts)
        session = self.sessions.get(key)
        if session is None:
            title = str(args.get("title") or "")
            if len(title) > MAX_SESSION_TITLE:
                raise SlackError("invalid_arguments", response_metadata={"messages": [
                    f"[ERROR] title must be at most {MAX_SESSION_TITLE} characters"]})
            initiator = str(args.get("initiator_user_id") or "")
            if initiator and initiator not in channel.members:
                raise SlackError("user_not_in_channel")
            session = self.sessions[key] = AgentSession(channel.id, parent.ts, str(status), title, initiator)
            session.history.append(str(status))
        else:
            self._set_session(session, str(status))
        answer: dict[str, Any] = {"status": session.status, "title": session.title}
        if "agent_session_stopped" not in self.events:
            warning = "missing_agent_session_stopped_event_subscription"
            answer.update(warning=warning, response_metadata={"warnings": [warning]})
        return answer

    async def press_stop(self, channel: str, thread_ts: str, *, user: str = "UALLOWED") -> Envelope | None:
        """A person presses Slack's own Stop button on a processing session: the app's open streams in the
        thread stop (later appends answer `stopped_by_user`), `agent_session_stopped` is delivered when
        subscribed (None otherwise), and the session's status stays what it was."""
        session = self.sessions.get((channel, thread_ts))
        assert session is not None and session.status == "processing", "Slack shows Stop only while processing"
        assert "agent_session_stopped" in self.events, "without the subscription Slack shows no Stop button"
        stopped = []
        for stream in self.streams.values():
            if stream.channel == channel and stream.thread_ts == thread_ts and self._stream_open(stream):
                stream.state = "stopped_by_user"
                stopped.append(stream.ts)
        return await self.event({"type": "agent_session_stopped", "channel": channel, "user": user,
                                 "thread_ts": thread_ts, "streaming_message_ts": stopped,
                                 "event_ts": f"{time.time():.6f}"})

    async def react(self, channel: str, ts: str, reaction: str, *, user: str = "UALLOWED") -> Envelope | None:
        """A person adds a reaction to a message: `reaction_added` (the emoji's name without colons, the
        message as `item`) when the app subscribes to it and holds reactions:read (None otherwise)."""
        message = self.messages.get((channel, ts))
        assert message is not None, f"no message {ts} in {channel} to react to"
        if not self.subscribed("reaction_added"):
            return None
        return await self.event({"type": "reaction_added", "user": user, "reaction": reaction,
                                 "item_user": message.author or BOT_USER,
                                 "item": {"type": "message", "channel": channel, "ts": ts},
                                 "event_ts": f"{time.time():.6f}"})

    # ---- files (files_upload_v2) -----------------------------------------------------

    def m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("files:write")
        filename = str(args.get("filename") or "")
        try:
            length = int(args.get("length", ""))
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not filename:
            raise SlackError("invalid_arguments")
        if length <= 0:
            raise SlackError("missing_argument")
        if len(str(args.get("alt_txt") or "")) > MAX_ALT_TXT:
            raise SlackError("alt_txt_too_large")
        file_id = "F" + secrets.token_hex(5).upper()
        self.uploads[file_id] = Upload(file_id, filename, length)
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    async def upload(self, request: web.Request) -> web.Response:
        """The raw POST of a file's bytes to the URL files.getUploadURLExternal handed out."""
        fault = self._take_fault("upload")
        if fault is not None:
            return await self._fail(request, fault)  # type: ignore[return-value]
        found = self.uploads.get(request.match_info["id"])
        if found is None or found.data is not None:
            return web.Response(status=404, text="not found")
        found.data = await request.read()
        return web.Response(text=f"OK - {len(found.data)}", content_type="text/plain")

    def m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        self._need_scope("files:write")
        listed = args.get("files")
        if not isinstance(listed, list) or not listed:
            raise SlackError("invalid_arguments")
        uploads = []
        for entry in listed:
            found = self.uploads.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            # "Could not find the file from the upload ticket": never got, or never sent its bytes.
            if found is None or found.data is None or found.shared:
                raise SlackError("file_not_found")
            uploads.append((found, str(entry.get("title") or found.filename)))
        channel_id = str(args.get("channel_id") or "")
        channels = [c for c in str(args.get("channels") or "").split(",") if c]
        thread_ts = args.get("thread_ts") or None
        if thread_ts and len(channels) + bool(channel_id) != 1:
            raise SlackError("invalid_arguments", response_metadata={"messages": [
                "provide only one channel when using thread_ts"]})
        channel = self._postable(channel_id or channels[0]) if channel_id or channels else None
        if channel is not None and thread_ts:
            self._thread_parent(channel.id, str(thread_ts))
        for found, title in uploads:
            found.title, found.shared = title, True
        shown = [found.shown() for found, _ in uploads]
        if channel is not None:
            message = self._store(channel.id, str(args.get("initial_comment") or ""), None, thread_ts=thread_ts,
                                  files=shown)
            self._echo(message)
        return {"files": shown}

    # ---- user groups -----------------------------------------------------------------

    def m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """The members of a user group: `usergroup` required, `no_such_subteam` for an unknown one."""
        self._need_scope("usergroups:read")
        group = str(args.get("usergroup") or "")
        if not group:
            raise SlackError("invalid_arguments")
        members = self.usergroups.get(group)
        if members is None:
            raise SlackError("no_such_subteam")
        return {"users": list(members)}

    # ---- people's files (files:read) ---------------------------------------------------

    def host(self, name: str, mimetype: str, data: bytes, *, user: str = "UALLOWED", channel: str = "CGENERAL",
             stub: bool = False) -> dict[str, Any]:
        """A person uploads a file: its file object as a message event carries it (`stub`: the partial object
        Slack sends with `file_access: check_file_info`, e.g. in Slack Connect channels)."""
        file_id = "F" + secrets.token_hex(5).upper()
        hosted = Hosted(file_id, name, mimetype, data, user, channel, int(time.time()))
        self.hosted[file_id] = hosted
        if stub:
            return {"id": file_id, "mode": "file_access", "file_access": "check_file_info", "created": 0,
                    "timestamp": 0, "user": ""}
        return hosted.described(self.url)

    def m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """A file's object: `file` required; `file_not_found` for an unknown id, `file_deleted` once deleted."""
        self._need_scope("files:read")
        file_id = str(args.get("file") or "")
        if not file_id:
            raise SlackError("invalid_arguments")
        found = self.hosted.get(file_id)
        if found is None:
            raise SlackError("file_not_found")
        if found.deleted:
            raise SlackError("file_deleted")
        return {"file": found.described(self.url), "comments": [], "response_metadata": {"next_cursor": ""}}

    async def download(self, request: web.Request) -> web.StreamResponse:
        """url_private(_download): the bytes for a token with files:read sent as `Authorization: Bearer`; without
        one Slack answers 200 with its sign-in page (HTML), not an error."""
        auth = request.headers.get("Authorization", "")
        file_id = request.match_info["key"].removeprefix(f"{TEAM}-")
        self.downloads.append((file_id, auth))
        found = self.hosted.get(file_id)
        if auth != f"Bearer {self.bot_token}" or "files:read" not in self.scopes or self.refuse_auth:
            return web.Response(text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>",
                                content_type="text/html")
        if found is None or found.deleted or found.name != request.match_info["name"]:
            return web.Response(status=404, text="file not found")
        return web.Response(body=found.data, content_type=found.mimetype)

    # ---- reading conversations -------------------------------------------------------

    def _readable(self, channel_id: str) -> Channel:
        """A conversation the bot may read: a member of it, with the history scope of its kind."""
        channel = self.channels.get(channel_id)
        if channel is None or not channel.bot_member:
            raise SlackError("channel_not_found")
        self._need_scope(HISTORY_SCOPE[channel.kind])
        return channel

    def _thread_parent(self, channel: str, ts: str) -> Message:
        parent = self.messages.get((channel, ts))
        # Slack documents no error for a missing parent; refusing it is the stricter reading (UNCONFIRMED).
        if parent is None or parent.ephemeral or parent.deleted:
            raise SlackError("thread_not_found")
        if parent.thread_ts and parent.thread_ts != parent.ts:
            raise SlackError("cannot_reply_to_message")
        return parent

    def m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._readable(str(args.get("channel") or ""))
        found = self.messages.get((channel.id, str(args.get("ts") or "")))
        if found is None or found.ephemeral or found.deleted:
            raise SlackError("thread_not_found")
        root = found.thread_ts or found.ts
        thread = [m for m in self.channel_messages(channel.id) if m.ts == root or m.thread_ts == root]
        thread.sort(key=lambda m: (m.ts != root, m.ts))
        start = int(args.get("cursor") or 0)
        limit = max(1, min(int(args.get("limit") or 1000), 1000))
        page = thread[start:start + limit]
        more = start + limit < len(thread)
        return {"messages": [m.stored() for m in page], "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channels.get(str(args.get("channel") or ""))
        if channel is None or (channel.private and not channel.bot_member):
            raise SlackError("channel_not_found")
        found = self.messages.get((channel.id, str(args.get("message_ts") or "")))
        if found is None or found.ephemeral or found.deleted:
            raise SlackError("message_not_found")
        link = f"https://test.slack.com/archives/{channel.id}/p{found.ts.replace('.', '')}"
        if found.thread_ts and found.thread_ts != found.ts:
            link += f"?thread_ts={found.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    # ---- response_url ----------------------------------------------------------------

    def response_url(self, kind: str, channel: str, user: str, source: tuple[str, str] | None = None) -> str:
        key = uuid.uuid4().hex
        self._urls[key] = ResponseUrl(kind, channel, user, self.now(), source)
        return f"{self.url}/respond/{key}"

    async def respond(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        status, answer = self._respond(request.match_info["id"], body)
        self.response_attempts.append((body, status, answer))
        if status == 200:
            self.responses.append(body)
        return web.Response(text=answer, status=status, content_type="text/html")

    def _respond(self, key: str, body: dict[str, Any]) -> tuple[int, str]:
        url = self._urls.get(key)
        # After 5 uses or 30 minutes Slack refuses the URL; the exact answer is UNCONFIRMED, 404 is chosen.
        if url is None:
            return 404, "invalid_url"
        url.uses += 1
        if self.now() - url.created > RESPONSE_URL_LIFETIME:
            return 404, "expired_url"
        if url.uses > RESPONSE_URL_USES:
            return 404, "used_url"
        if not isinstance(body, dict) or not body:
            return 400, "invalid_payload"
        try:
            if not body.get("delete_original"):
                self._check_content(body)
        except SlackError as exc:
            return 400, exc.error
        source = self.messages.get(url.source) if url.source else None
        if url.kind == "action" and source is not None and not source.deleted:
            if body.get("delete_original"):
                source.deleted = True
                return 200, "ok"
            if body.get("replace_original"):
                source.text = str(body.get("text") or "")
                source.blocks = normalise(body.get("blocks") or [])
                source.versions.append(source.blocks)
                self._shows(body, source)
                return 200, "ok"
        elif url.kind == "command" and (body.get("replace_original") or body.get("delete_original")):
            # A slash command's response_url cannot replace its own ephemeral answer: "does nothing" (bolt-js#2287).
            return 200, "ok"
        if body.get("response_type") == "in_channel":
            message = self._store(url.channel, str(body.get("text") or ""), body.get("blocks"),
                                  by_bot_token=False, thread_ts=body.get("thread_ts"))
        else:
            message = self._store(url.channel, str(body.get("text") or ""), body.get("blocks"),
                                  ephemeral_to=url.user)
        self._shows(body, message)
        return 200, "ok"

    def age_response_urls(self, seconds: float) -> None:
        """Let time pass for every response_url and trigger already handed out."""
        self.clock_offset += seconds

    # ---- socket mode -----------------------------------------------------------------

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self.socket = socket
        self.connections += 1
        number = self.connections
        await socket.send_json({"type": "hello", "num_connections": 1,
                                "debug_info": {"host": "applink-emulator", "build_number": 1,
                                               "approximate_connection_time": 18060},
                                "connection_info": {"app_id": APP_ID}})
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            envelope = self.envelopes.get(data.get("envelope_id", ""))
            if envelope is not None and envelope.acked_at is None:
                envelope.acked_at = time.monotonic()
                envelope.ack_payload = data.get("payload")
        now = time.monotonic()
        for envelope in self.envelopes.values():
            if envelope.via == number and envelope.acked_at is None and now - envelope.sent_at <= ACK_DEADLINE:
                envelope.dropped = True
        return socket

    async def connected(self, count: int = 1) -> None:
        await wait_until(self._has_connections(count), timeout=20)

    def _has_connections(self, count: int) -> Any:
        async def check() -> bool:
            return self.connections >= count and self.socket is not None and not self.socket.closed
        return check

    def trigger(self) -> str:
        trigger_id = f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = (self.now(), False)
        return trigger_id

    async def send(self, envelope_type: str, payload: dict[str, Any], *, envelope_id: str | None = None,
                   retry_attempt: int = 0) -> Envelope:
        """Push one envelope and return its record (acked_at is set when the bot acks)."""
        await self.connected()
        envelope_id = envelope_id or str(uuid.uuid4())
        record = Envelope(envelope_id, envelope_type, time.monotonic(), trigger_id=payload.get("trigger_id"),
                          payload=payload, retry_attempt=retry_attempt, via=self.connections)
        if payload.get("type") == "view_submission":
            record.inputs = frozenset(b["block_id"] for b in payload["view"]["blocks"] if b.get("type") == "input")
        self.envelopes[envelope_id] = record
        assert self.socket is not None
        frame: dict[str, Any] = {"envelope_id": envelope_id, "payload": payload, "type": envelope_type,
                                 "accepts_response_payload": envelope_type == "slash_commands"}
        if envelope_type == "events_api":
            frame.update(retry_attempt=retry_attempt, retry_reason="timeout" if retry_attempt else "")
            if retry_attempt < EVENT_RETRIES:
                self._later(self._redeliver_if_late(record))
        await self.socket.send_json(frame)
        return record

    def _later(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _redeliver_if_late(self, record: Envelope) -> None:
        await asyncio.sleep(ACK_DEADLINE)
        if record.acked_at is None and not record.dropped and self._socket_open():
            await self.redeliver(record)

    async def redeliver(self, record: Envelope) -> Envelope:
        """Deliver an event again, as Slack does after a late ack: same event_id, `retry_attempt` + 1."""
        assert record.kind == "events_api", "Slack redelivers only events"
        return await self.send("events_api", record.payload, retry_attempt=record.retry_attempt + 1)

    def _socket_open(self) -> bool:
        return self.socket is not None and not self.socket.closed

    # ---- the Events API --------------------------------------------------------------

    def subscribed(self, event: str) -> bool:
        """True when the app subscribes to `event` and holds the scope it needs."""
        scope = EVENT_SCOPES.get(event)
        return event in self.events and (scope is None or scope in self.scopes)

    async def event(self, event: dict[str, Any]) -> Envelope | None:
        """Deliver one event in its event_callback wrapper; None when no connection is open."""
        if not self._socket_open():
            return None
        event_id = "Ev" + secrets.token_hex(5).upper()
        return await self.send("events_api", {
            "token": "verification-token", "team_id": TEAM, "api_app_id": APP_ID, "type": "event_callback",
            "event_id": event_id, "event_time": int(time.time()), "event_context": f"1-{event['type']}-{TEAM}",
            "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER, "is_bot": True,
                                "is_enterprise_install": False}],
            "is_ext_shared_channel": False, "event": event})

    def message_event(self, message: Message) -> dict[str, Any] | None:
        """The `message` event of a stored message, or None when the app would not get it."""
        channel = self.channels[message.channel]
        if not channel.bot_member or not self.subscribed(MESSAGE_EVENT[channel.kind]):
            return None
        event = {**message.stored(), "channel": message.channel, "event_ts": message.ts,
                 "channel_type": channel.kind}
        if message.thread_ts and message.thread_ts != message.ts:
            parent = self.messages.get((message.channel, message.thread_ts))
            event["parent_user_id"] = (parent.author if parent is not None else None) or BOT_USER
        return event

    def _echo(self, message: Message, *, edited: bool = False) -> None:
        """The bot's own post (or edit) comes back as a message event, as it does from Slack."""
        event = self.message_event(message)
        if event is None or not self._socket_open():
            return
        if edited:
            event = {"type": "message", "subtype": "message_changed", "hidden": True, "message": event,
                     "channel": message.channel, "ts": self.next_ts(), "event_ts": self.next_ts(),
                     "channel_type": event["channel_type"]}
        self._later(self._quietly(self.event(event)))

    async def _quietly(self, work: Any) -> None:
        # The connection closed meanwhile: Slack would deliver it to the next one.
        with contextlib.suppress(ConnectionError, RuntimeError, AssertionError):
            await work

    async def say(self, text: str, *, user: str = "UALLOWED", channel: str = "CGENERAL",
                  thread_ts: str | None = None, mention_first: bool = True,
                  files: list[dict[str, Any]] | None = None) -> tuple[Message, list[Envelope]]:
        """A person posts `text` (typed as they would; `@da` mentions the bot), with `files` (from `host`)
        attached: the message as Slack stores it and the events it delivers (`app_mention` and `message` for a
        mention in a channel; a file share is a `message` with subtype `file_share`)."""
        where = self.channels[channel]
        assert user in where.members, f"{user} is not in {channel}"
        if thread_ts is not None:
            parent = self._thread_parent(channel, thread_ts)
            thread_ts = parent.ts
        mentions = "@da" in text.split() or text.startswith("@da ")
        stored_text = " ".join(f"<@{BOT_USER}>" if word == "@da" else word for word in
                               slack_limits.escape(text).split(" "))
        message = Message(channel, self.next_ts(), stored_text, rich_text(stored_text), by_bot_token=False,
                          thread_ts=thread_ts, author=user, files=list(files or []))
        message.versions.append(message.blocks)
        self.messages[(channel, message.ts)] = message
        delivered: list[Envelope] = []
        events: list[dict[str, Any]] = []
        plain = self.message_event(message)
        if plain is not None:
            events.append(plain)
        if mentions and where.kind != "im" and where.bot_member and self.subscribed("app_mention"):
            # app_mention carries no channel_type; Slack sends it beside the message event, another event_id.
            mention = {key: value for key, value in message.stored().items()}
            mention.update(type="app_mention", channel=channel, event_ts=message.ts)
            events.insert(0 if mention_first else len(events), mention)
        for event in events:
            envelope = await self.event(event)
            if envelope is not None:
                delivered.append(envelope)
        return message, delivered

    async def open_home(self, user: str = "UALLOWED") -> Envelope | None:
        """The user opens the app's Home tab (app_home_opened, with the view once one was published)."""
        if not self.subscribed("app_home_opened"):
            return None
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "channel": self.im_of(user), "tab": "home",
                                 "event_ts": f"{time.time():.6f}"}
        if user in self.homes:
            event["view"] = self.homes[user]
        return await self.event(event)

    # ---- shortcuts -------------------------------------------------------------------

    async def global_shortcut(self, callback_id: str, *, user: str = "UALLOWED") -> Envelope:
        """A global shortcut: no channel, no message, no response_url."""
        assert SHORTCUTS.get(callback_id) == "global", f"the manifest declares no global shortcut {callback_id}"
        return await self.send("interactive", {
            "type": "shortcut", "token": "verification-token", "action_ts": f"{time.time():.6f}",
            "team": {"id": TEAM, "domain": "test"}, "user": {"id": user, "username": user.lower(), "team_id": TEAM},
            "is_enterprise_install": False, "enterprise": None, "callback_id": callback_id,
            "trigger_id": self.trigger()})

    async def message_shortcut(self, callback_id: str, message: Message, *, user: str = "UALLOWED") -> Envelope:
        """A message shortcut on a stored message: the message as Slack keeps it and a response_url."""
        assert SHORTCUTS.get(callback_id) == "message", f"the manifest declares no message shortcut {callback_id}"
        assert not message.ephemeral and not message.deleted
        where = self.channels[message.channel]
        return await self.send("interactive", {
            "type": "message_action", "token": "verification-token", "action_ts": f"{time.time():.6f}",
            "team": {"id": TEAM, "domain": "test"}, "user": {"id": user, "name": user.lower()},
            "channel": {"id": message.channel, "name": where.name}, "callback_id": callback_id,
            "trigger_id": self.trigger(), "message_ts": message.ts, "message": message.stored(),
            "response_url": self.response_url("command", message.channel, user), "is_enterprise_install": False,
            "enterprise": None})

    async def click_view(self, action_id: str, view: dict[str, Any] | str, value: str | None = None, *,
                         user: str = "UALLOWED") -> Envelope:
        """Click a button in a modal or the Home tab: container `view`, the view itself, no response_url."""
        stored = self.views[view] if isinstance(view, str) else self.views[view["id"]]
        if stored["type"] == "home":
            assert self.homes.get(user, {}).get("id") == stored["id"], f"{user} does not see that Home tab"
        block, element = find_element(stored["blocks"], action_id, value)
        action: dict[str, Any] = {"action_id": action_id, "block_id": block["block_id"], "type": element["type"],
                                  "action_ts": f"{time.time():.6f}", "text": element.get("text"),
                                  "value": element.get("value", "")}
        return await self.send("interactive", {
            "type": "block_actions", "user": {"id": user, "username": user.lower(), "name": user.lower(),
                                              "team_id": TEAM},
            "api_app_id": APP_ID, "token": "verification-token",
            "container": {"type": "view", "view_id": stored["id"]}, "trigger_id": self.trigger(),
            "team": {"id": TEAM, "domain": "test"}, "enterprise": None, "is_enterprise_install": False,
            "view": {**stored, "state": {"values": {}}}, "actions": [action]})

    async def slash(self, text: str, *, user: str = "UALLOWED", channel: str = "CGENERAL") -> Envelope:
        """`/da <text>` as Slack delivers it: & < > escaped, a command response_url, a fresh trigger."""
        name = self.channels[channel].name if channel in self.channels else ""
        return await self.send("slash_commands", {
            "token": "verification-token", "team_id": TEAM, "team_domain": "test", "channel_id": channel,
            "channel_name": name, "user_id": user, "user_name": user.lower(), "command": "/da",
            "text": slack_limits.escape(text), "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": self.response_url("command", channel, user), "trigger_id": self.trigger()})

    def message_of(self, shown: dict[str, Any] | Message) -> tuple[Message, list[dict[str, Any]]]:
        """The stored message a recorded body showed, and its blocks as that body showed them."""
        if isinstance(shown, Message):
            return shown, shown.blocks
        for body, message, version in self._shown:
            if body is shown:
                return message, message.versions[version]
        raise AssertionError("that body never showed a message (was it refused?)")

    async def click(self, action_id: str, value: str | None = None, *, on: dict[str, Any] | Message | None = None,
                    selected: str | None = None, user: str = "UALLOWED", envelope_id: str | None = None,
                    message: dict[str, Any] | None = None, ts: str | None = None,
                    channel: str = "CGENERAL") -> Envelope:
        """Click a button (or pick `selected` in a menu) on a message as the user saw it in `on`.

        The payload is Slack's: the element's real block_id, value and text, `state`, a
        response_url that can replace that message, and `message` only for a channel message.
        """
        if on is None and message is not None:
            on = message
        if on is None:
            found = self.messages.get((channel, ts or ""))
            assert found is not None, f"no message {ts} in {channel} to click on"
            on = found
        target, shown_blocks = self.message_of(on)
        assert not target.deleted, "that message was deleted"
        assert target.ephemeral_to in (None, user), f"{user} cannot see an ephemeral message for {target.ephemeral_to}"
        block, element = find_element(shown_blocks, action_id, value)
        action: dict[str, Any] = {"action_id": action_id, "block_id": block["block_id"], "type": element["type"],
                                  "action_ts": f"{time.time():.6f}"}
        if element["type"] == "button":
            action.update(text=element["text"], value=element.get("value", ""))
            if "style" in element:
                action["style"] = element["style"]
        else:
            option = next((o for o in element.get("options", []) if o["value"] == selected), None)
            assert option is not None, f"{selected!r} is not an option of {action_id}"
            action["selected_option"] = option
        where = self.channels.get(target.channel)
        payload: dict[str, Any] = {
            "type": "block_actions", "user": {"id": user, "username": user.lower(), "name": user.lower(),
                                              "team_id": TEAM},
            "api_app_id": APP_ID, "token": "verification-token",
            "container": {"type": "message", "message_ts": target.ts, "channel_id": target.channel,
                          "is_ephemeral": target.ephemeral},
            "trigger_id": self.trigger(), "team": {"id": TEAM, "domain": "test"}, "enterprise": None,
            "is_enterprise_install": False, "channel": {"id": target.channel, "name": where.name if where else ""},
            "state": {"values": select_state(shown_blocks, action)},
            "response_url": self.response_url("action", target.channel, user, (target.channel, target.ts)),
            "actions": [action]}
        if not target.ephemeral:
            payload["message"] = target.stored()
        return await self.send("interactive", payload, envelope_id=envelope_id)

    async def submit(self, view: dict[str, Any] | str, values: dict[str, Any], *, user: str = "UALLOWED") -> Envelope:
        """Submit a modal the bot opened, with `values` as state (keyed by input block_id and action_id)."""
        view_id = view if isinstance(view, str) else view["id"]
        stored = self.views.get(view_id)
        assert stored is not None, "no such view was opened"
        inputs = {b["block_id"]: b["element"]["action_id"] for b in stored["blocks"] if b.get("type") == "input"}
        for block_id, actions in values.items():
            assert block_id in inputs and set(actions) == {inputs[block_id]}, f"{block_id} is not an input of the view"
        submitted = {**stored, "state": {"values": values}}
        return await self.send("interactive", {
            "type": "view_submission", "team": {"id": TEAM, "domain": "test"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
            "api_app_id": APP_ID, "token": "verification-token", "trigger_id": self.trigger(), "view": submitted,
            "response_urls": [], "is_enterprise_install": False, "enterprise": None})

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
        """The arguments of every call of `method` that Slack accepted."""
        return [call.args for call in self.calls if call.method == method and call.ok]

    def refused(self, method: str | None = None) -> list[Call]:
        return [call for call in self.calls if not call.ok and method in (None, call.method)]

    def channel_messages(self, channel: str, *, top_level: bool = False) -> list[Message]:
        """What everyone in a channel sees (not ephemeral, not deleted), oldest first."""
        return [m for (c, _), m in self.messages.items() if c == channel and not m.ephemeral and not m.deleted
                and not (top_level and m.thread_ts)]

    def thread(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.channel_messages(channel) if m.thread_ts == ts]

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

    def late_acks(self) -> list[Envelope]:
        """Envelopes acked after 3 s or never: Slack shows the user an error for each."""
        return [e for e in self.envelopes.values() if e.late]

    def bad_acks(self) -> list[tuple[Envelope, str]]:
        """Acks whose answer Slack would refuse or ignore."""
        return [(e, problem) for e in self.envelopes.values() if (problem := e.ack_problem())]


def chunk_errors(chunks: Any) -> list[str]:
    """Why Slack would answer invalid_chunks: each chunk's type and the fields it needs."""
    if not isinstance(chunks, list):
        return ["must be an array [json-pointer:/chunks]"]
    errors: list[str] = []
    for n, chunk in enumerate(chunks):
        where = f"[json-pointer:/chunks/{n}]"
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind not in CHUNK_TYPES:
            errors.append(f"unsupported chunk type {kind!r} {where}")
        elif kind == "markdown_text" and (not isinstance(chunk.get("text"), str) or len(chunk["text"]) > MAX_MARKDOWN):
            errors.append(f"text must be a string of at most {MAX_MARKDOWN} characters {where}")
        elif kind == "plan_update" and not isinstance(chunk.get("title"), str):
            errors.append(f"title is required {where}")
        elif kind == "task_update":
            if not chunk.get("id") or not isinstance(chunk.get("title"), str) or not chunk["title"]:
                errors.append(f"id and title are required {where}")
            elif len(chunk["title"]) > MAX_TASK_TITLE:
                errors.append(f"title must be at most {MAX_TASK_TITLE} characters {where}")
            if chunk.get("status") not in TASK_STATUSES:
                errors.append(f"status must be one of {sorted(TASK_STATUSES)} {where}")
        elif kind == "blocks":
            errors += slack_limits.block_errors(chunk.get("blocks"), root=f"/chunks/{n}/blocks")
    return errors


def stored_view(view: dict[str, Any], *, view_id: str | None = None) -> dict[str, Any]:
    """A view as Slack keeps and returns it (views.open, views.publish)."""
    view_id = view_id or "V" + secrets.token_hex(5).upper()
    return {**view, "id": view_id, "team_id": TEAM, "blocks": normalise(view.get("blocks") or []),
            "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
            "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": False, "notify_on_close": False, "previous_view_id": None,
            "root_view_id": view_id, "app_id": APP_ID, "external_id": "", "app_installed_team_id": TEAM,
            "bot_id": BOT_ID}


def normalise(blocks: list[Any]) -> list[dict[str, Any]]:
    """Blocks as Slack stores them: generated block ids, `emoji`/`verbatim` defaults, plain text escaped."""
    stored = json.loads(json.dumps(blocks))
    for obj in slack_limits.text_objects(stored):
        if obj["type"] == "plain_text" and isinstance(obj["text"], str):
            obj["text"] = slack_limits.escape(obj["text"])
            obj.setdefault("emoji", True)
        elif obj["type"] == "mrkdwn":
            obj.setdefault("verbatim", False)
    for block in stored:
        if isinstance(block, dict):
            block.setdefault("block_id", secrets.token_urlsafe(3))
    return stored  # type: ignore[no-any-return]


def rich_text(text: str) -> list[dict[str, Any]]:
    """The rich_text block Slack adds to a person's message (mentions as user elements)."""
    elements: list[dict[str, Any]] = []
    for n, part in enumerate(text.split(f"<@{BOT_USER}>")):
        if n:
            elements.append({"type": "user", "user_id": BOT_USER})
        if part:
            elements.append({"type": "text", "text": slack_limits.unescape(part)})
    return [{"type": "rich_text", "block_id": secrets.token_urlsafe(3),
             "elements": [{"type": "rich_text_section", "elements": elements}]}]


def find_element(blocks: list[dict[str, Any]], action_id: str,
                 value: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in blocks:
        elements = list(block.get("elements") or []) + ([block["accessory"]] if "accessory" in block else [])
        for element in elements:
            if isinstance(element, dict) and element.get("action_id") == action_id and (
                    not value or element.get("value") == value):
                return block, element
    raise AssertionError(f"no {action_id} element{f' with value {value}' if value else ''} on that message")


def select_state(blocks: list[dict[str, Any]], action: dict[str, Any]) -> dict[str, Any]:
    """`state.values` of a message: every menu's current choice, this click's included."""
    values: dict[str, Any] = {}
    for block in blocks:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("type") == "static_select":
                chosen = element.get("initial_option")
                if element.get("action_id") == action["action_id"] and block["block_id"] == action["block_id"]:
                    chosen = action.get("selected_option")
                values.setdefault(block["block_id"], {})[element["action_id"]] = {
                    "type": "static_select", "selected_option": chosen}
    return values
