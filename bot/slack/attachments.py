"""Files people attach in Slack, brought to the agent: checked against the limits, downloaded by the
bot (`url_private_download`, the bot token as Bearer, scope `files:read`) and carried in the task's
payload as `attachments` (name, mimetype, size, base64 data) for the worker to write into the task's
workspace before the agent starts.

The bytes travel through the queue so that the bot token never leaves the bot: a worker runs agents
that execute code, and anything on its machine is theirs to read. That bounds the files by the
queue's body limit (`SLACK_FILES_MAX_BYTES`, within QUEUE_MAX_BODY once base64 adds a third).
"""

from __future__ import annotations

import base64
import fnmatch
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from da.bot.slack import delivery

logger = logging.getLogger(__name__)

# What a task carries by default: five files, 700,000 bytes in all (base64 makes that ~933 kB, inside the
# queue's default 1 MiB body), of the kinds an agent reads: text and code, images, PDF.
DEFAULT_MAX_COUNT = 5
DEFAULT_MAX_BYTES = 700_000
DEFAULT_TYPES = ("text/*", "image/*", "application/pdf", "application/json", "application/xml",
                 "application/x-yaml", "application/yaml", "application/javascript", "application/x-sh",
                 "application/x-python", "application/toml")
# What a request that is only files asks the agent.
FILES_ONLY_PROMPT = "Look at the attached files."
# A file name as it lands on disk: no folders, no leading dot, nothing odd.
UNSAFE_NAME = re.compile(r"[^\w.\- ()+@,]")
MAX_NAME = 120


class FileRefused(Exception):
    """A file cannot go with the task; `sentence` says why and what to do, for the thread."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


@dataclass(frozen=True)
class Limits:
    """How many files, how many bytes in all and which types a request may bring (settings, parsed at start)."""

    count: int = DEFAULT_MAX_COUNT
    total_bytes: int = DEFAULT_MAX_BYTES
    types: tuple[str, ...] = DEFAULT_TYPES


@dataclass(frozen=True)
class Shared:
    """A file as Slack describes it: what the bot needs to check and download it (never its bytes)."""

    id: str
    name: str
    mimetype: str
    size: int
    url: str

    @classmethod
    def of(cls, found: Mapping[str, Any]) -> Shared:
        size = found.get("size")
        return cls(str(found.get("id") or ""), str(found.get("name") or found.get("title") or ""),
                   str(found.get("mimetype") or ""), size if isinstance(size, int) else -1,
                   str(found.get("url_private_download") or found.get("url_private") or ""))

    @property
    def complete(self) -> bool:
        """False for Slack's stub (`file_access: check_file_info`): files.info gives the rest."""
        return bool(self.url and self.name and self.size >= 0)

    def dump(self) -> dict[str, Any]:
        return asdict(self)


def of_event(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The file objects a message event carries (a `file_share`), as Slack sent them."""
    found = event.get("files")
    return [item for item in found if isinstance(item, dict) and item.get("id")] if isinstance(found, list) else []


def human(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 1_000_000 else f"{max(1, round(size / 1000))} kB"


def refusal(files: Sequence[Shared], limits: Limits) -> str | None:
    """Why these files cannot go with a task (one sentence naming the file and the limit), or None."""
    if not limits.count:
        return "Files are not passed to agents here (SLACK_FILES_MAX_COUNT is 0): paste the text instead."
    if len(files) > limits.count:
        return (f"A task takes at most {limits.count} files and this message has {len(files)}: attach fewer "
                "(or ask whoever runs da to raise SLACK_FILES_MAX_COUNT).")
    for shared in files:
        if not any(fnmatch.fnmatch(shared.mimetype.lower(), pattern) for pattern in limits.types):
            return (f"{shared.name} is {shared.mimetype or 'of no known type'}, which da does not pass to agents: "
                    "attach text, code, images or PDF (or ask whoever runs da to add the type to SLACK_FILES_TYPES).")
    total = sum(max(shared.size, 0) for shared in files)
    if total > limits.total_bytes:
        return (f"The files come to {human(total)}, more than the {human(limits.total_bytes)} a task can carry: "
                "attach less (or ask whoever runs da to raise SLACK_FILES_MAX_BYTES, with QUEUE_MAX_BODY).")
    return None


def disk_names(files: Sequence[Shared]) -> list[str]:
    """Each file's name as it lands in the workspace: no folders, no leading dot, none twice."""
    names: list[str] = []
    for shared in files:
        name = UNSAFE_NAME.sub("_", shared.name.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")[-MAX_NAME:]
        name = name or shared.id or "file"
        stem, dot, ext = name.rpartition(".")
        candidate, n = name, 2
        while candidate in names:
            candidate = f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"
            n += 1
        names.append(candidate)
    return names


class Downloader:
    """Brings attached files from Slack with the bot token, which goes only to Slack's own hosts."""

    def __init__(self, web: AsyncWebClient, token: str, *, api_url: str, timeout: float, limits: Limits) -> None:
        self.web = web
        self._token = token
        self.limits = limits
        self.timeout = timeout
        # Slack's hosts; the configured API's host too (GovSlack, the tests' emulator).
        self.hosts = {urlsplit(api_url).hostname or "slack.com"}

    def trusted(self, url: str) -> bool:
        """True for a URL the bot token may be sent to."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        slack = host == "slack.com" or host.endswith((".slack.com", ".slack-edge.com"))
        return (parts.scheme == "https" and slack) or host in self.hosts

    async def described(self, found: Sequence[Mapping[str, Any]]) -> list[Shared]:
        """The files as Slack describes them: a stub is completed with files.info."""
        described = []
        for item in found:
            shared = Shared.of(item)
            if not shared.complete:
                try:
                    shared = Shared.of((await self.web.files_info(file=shared.id)).get("file") or {})
                except delivery.FAILURES as exc:
                    raise FileRefused(f"Slack would not describe the attached file {shared.name or shared.id} "
                                      f"({delivery.problem(exc)}); attach it again.") from exc
            described.append(shared)
        return described

    async def checked(self, found: Sequence[Mapping[str, Any]]) -> list[Shared]:
        """The files, described and within the limits (else FileRefused says why)."""
        files = await self.described(found)
        why = refusal(files, self.limits)
        if why is not None:
            raise FileRefused(why)
        return files

    async def fetch(self, files: Sequence[Shared]) -> list[dict[str, Any]]:
        """The payload's `attachments`: each file downloaded, checked again against the limits."""
        names = disk_names(files)
        brought: list[dict[str, Any]] = []
        left = self.limits.total_bytes
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for shared, name in zip(files, names, strict=True):
                data = await self._download(session, shared, left)
                left -= len(data)
                brought.append({"name": name, "mimetype": shared.mimetype, "size": len(data),
                                "data": base64.b64encode(data).decode("ascii")})
        return brought

    async def _download(self, session: aiohttp.ClientSession, shared: Shared, left: int) -> bytes:
        if not self.trusted(shared.url):
            raise FileRefused(f"{shared.name} is not stored by Slack (it links elsewhere), so da cannot fetch it: "
                              "upload the file itself.")
        try:
            async with session.get(shared.url, headers={"Authorization": f"Bearer {self._token}"},
                                   allow_redirects=False) as answer:
                if answer.status != 200:
                    raise FileRefused(f"Slack did not hand over {shared.name} (HTTP {answer.status}): attach it "
                                      "again, and check that the app has the files:read scope.")
                # Without a token Slack answers with its sign-in page instead of the file.
                if answer.content_type == "text/html" and shared.mimetype != "text/html":
                    raise FileRefused(f"Slack answered with a sign-in page instead of {shared.name}: the app needs "
                                      "the files:read scope (add it and reinstall the app).")
                data = bytearray()
                async for chunk in answer.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > left:
                        break
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("downloading the attached file %s failed (%s)", shared.id, delivery.problem(exc))
            raise FileRefused(f"Downloading {shared.name} from Slack failed ({delivery.problem(exc)}): attach it "
                              "again.") from exc
        if len(data) > left:
            raise FileRefused(f"{shared.name} is larger than Slack said, past the {human(self.limits.total_bytes)} a "
                              "task can carry: attach less.")
        return bytes(data)
