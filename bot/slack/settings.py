"""Settings of `da bot`, parsed once at start: tokens are checked for shape here, not at first use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from da import config
from da.bot.settings import ClientSettings
from da.bot.slack import attachments
from da.config import ConfigError

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


@dataclass(frozen=True)
class BotSettings:
    """What `da bot` needs; tokens are checked for shape at start, not at first use."""

    bot_token: str
    app_token: str
    queue_urls: tuple[str, ...]
    secret: str
    allowed_users: frozenset[str] = frozenset()
    # SLACK_APPROVERS: who may answer an agent's asks besides the person who started the task (user ids, and
    # user group ids whose members Slack lists).
    approvers: frozenset[str] = frozenset()
    notify_channel: str = ""
    api_url: str = DEFAULT_SLACK_API_URL
    router: str = "rules"
    state_path: Path = Path("data/bot-state.json")
    config_dir: Path = Path("config")
    # Socket-mode ping period; the watchdog rebuilds the client after three silent periods.
    ping_interval: float = 10.0
    # Running-task cards are edited at most this often.
    progress_every: float = 10.0
    # SLACK_NOTIFY_DONE=1: `done` tasks not started from Slack are posted in the notify channel too.
    notify_done: bool = False
    # More alerts than this for one channel within a minute become one summary.
    burst_threshold: int = 5
    # One try of a Slack call gives up after this many seconds (then it is retried).
    slack_timeout: float = 30.0
    # One long-poll of the queue's event feed.
    feed_wait: float = 30.0
    # The workspace lease lasts this long unless renewed (at a third of it); a standby bot takes
    # over at most this long after the running one died without letting go.
    lease_ttl: float = 30.0
    # Files attached to a request that starts a task or to a thread reply: how many, how many bytes in all,
    # which types (SLACK_FILES_MAX_COUNT, SLACK_FILES_MAX_BYTES, SLACK_FILES_TYPES).
    files: attachments.Limits = field(default_factory=attachments.Limits)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None) -> BotSettings:
        bot_token = env.get("SLACK_BOT_TOKEN", "").strip()
        app_token = env.get("SLACK_APP_TOKEN", "").strip()
        if not bot_token:
            raise ConfigError("SLACK_BOT_TOKEN is not set; copy the Bot User OAuth Token (xoxb-...) into .env.")
        if not bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must start with xoxb- (the Bot User OAuth Token, not the app token).")
        if not app_token:
            raise ConfigError("SLACK_APP_TOKEN is not set; create an app-level token with connections:write "
                              "(xapp-...).")
        if not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must start with xapp- (an app-level token with connections:write).")
        client = ClientSettings.from_env(env, cwd=cwd)
        api_url = env.get("SLACK_API_URL", "").strip() or DEFAULT_SLACK_API_URL
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError(f"SLACK_API_URL={api_url!r} must be an http(s) URL.")
        return cls(
            bot_token=bot_token,
            app_token=app_token,
            queue_urls=client.queue_urls,
            secret=client.secret,
            allowed_users=frozenset(config.env_list(env, "SLACK_ALLOWED_USERS")),
            approvers=approvers(config.env_list(env, "SLACK_APPROVERS")),
            notify_channel=env.get("SLACK_NOTIFY_CHANNEL", "").strip(),
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            router=client.router,
            state_path=Path(env.get("SLACK_STATE_PATH") or "data/bot-state.json").expanduser(),
            notify_done=config.env_flag(env, "SLACK_NOTIFY_DONE"),
            burst_threshold=config.env_int(env, "SLACK_BURST_THRESHOLD", 5, minimum=1),
            slack_timeout=config.env_float(env, "SLACK_TIMEOUT", 30.0, minimum=1.0),
            config_dir=client.config_dir,
            files=attachments.Limits(
                count=config.env_int(env, "SLACK_FILES_MAX_COUNT", attachments.DEFAULT_MAX_COUNT, minimum=0),
                total_bytes=config.env_int(env, "SLACK_FILES_MAX_BYTES", attachments.DEFAULT_MAX_BYTES, minimum=1),
                types=tuple(t.lower() for t in config.env_list(env, "SLACK_FILES_TYPES")) or attachments.DEFAULT_TYPES),
        )


def approvers(ids: list[str]) -> frozenset[str]:
    """SLACK_APPROVERS as user ids (U…, W…) and user group ids (S…); anything else is refused at start, in one
    sentence."""
    wrong = [i for i in ids if not i.startswith(("U", "W", "S"))]
    if wrong:
        raise ConfigError(f"SLACK_APPROVERS has {', '.join(wrong[:3])}: list Slack user ids (U… or W…, from a "
                          "profile's ⋮ → Copy member ID) or user group ids (S…, from the group's page), separated "
                          "by commas.")
    return frozenset(ids)
