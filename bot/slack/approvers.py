"""Who may answer an agent's asks besides the person who started the task: SLACK_APPROVERS, user ids
and user group ids.

A group (`S…`) is resolved with `usergroups.users.list` (scope `usergroups:read`, Tier 2) and its
members kept for GROUP_TTL seconds, so a burst of clicks costs one call and a change to the group
reaches the bot within a minute.
"""

from __future__ import annotations

import logging
import time

from slack_sdk.web.async_client import AsyncWebClient

from da.bot.slack import delivery

logger = logging.getLogger(__name__)

# A group's members are asked again after this many seconds.
GROUP_TTL = 60.0


class Approvers:
    """SLACK_APPROVERS: its user ids, and the members of its user groups as Slack lists them."""

    def __init__(self, ids: frozenset[str], web: AsyncWebClient, *, ttl: float = GROUP_TTL) -> None:
        self.users = frozenset(i for i in ids if not is_group(i))
        self.groups = tuple(sorted(i for i in ids if is_group(i)))
        self.web = web
        self.ttl = ttl
        self._members: dict[str, tuple[float, frozenset[str]]] = {}

    async def include(self, user: str) -> bool:
        """True when `user` is an approver, by id or as a member of an approver group."""
        if user in self.users:
            return True
        for group in self.groups:
            if user in await self.members(group):
                return True
        return False

    async def members(self, group: str) -> frozenset[str]:
        """The group's members: kept for a while; when Slack does not say, the last known ones (none at first)."""
        kept = self._members.get(group)
        now = time.monotonic()
        if kept is not None and now < kept[0]:
            return kept[1]
        try:
            found = await self.web.usergroups_users_list(usergroup=group)
        except delivery.FAILURES as exc:
            logger.warning("the members of the SLACK_APPROVERS group %s could not be read (%s); the app needs the "
                           "usergroups:read scope and a group id from the group's page", group, delivery.problem(exc))
            return kept[1] if kept is not None else frozenset()
        users = frozenset(str(user) for user in found.get("users") or [])
        self._members[group] = (now + self.ttl, users)
        return users


def is_group(slack_id: str) -> bool:
    """A user group's id (S…), as opposed to a user's (U…, W…)."""
    return slack_id.startswith("S")
