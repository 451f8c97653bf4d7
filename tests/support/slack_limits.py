"""Slack's rules for what a message may hold, as the strict emulator enforces them.

Sources are in tests/SLACK_FACTS.md (sections 2, 4 and 7). Where Slack's behaviour is
UNCONFIRMED the stricter plausible rule is used and marked so.
"""

from __future__ import annotations

import re
from typing import Any

# A message holds 50 blocks; a modal or Home tab 100.
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
# msg_blocks_too_long comes at about 13,200 characters of block text; Slack's maintainers
# say "12,000 text characters with a buffer", so the emulator refuses above 12,000.
MAX_BLOCKS_TEXT = 12_000
# chat.postMessage truncates text past 40,000; chat.update refuses text past 4,000.
POST_TEXT_TRUNCATE = 40_000
UPDATE_TEXT_MAX = 4_000
KNOWN_BLOCKS = {"section", "divider", "header", "actions", "context", "image", "input", "rich_text", "markdown",
                "file", "video"}
KNOWN_ELEMENTS = {"button", "static_select", "external_select", "users_select", "conversations_select",
                  "channels_select", "overflow", "datepicker", "timepicker", "checkboxes", "radio_buttons",
                  "plain_text_input", "multi_static_select", "image", "rich_text_input", "number_input",
                  "email_text_input", "url_text_input", "datetimepicker"}

PING = re.compile(r"<(!here|!channel|!everyone|!subteam\^[^>|]+|@[UW][A-Z0-9]+)(\|[^>]*)?>")
LINK = re.compile(r"<((?:https?|mailto|ftp):[^>|]*)(\|[^>]*)?>")
# With verbatim false Slack "automatically parses certain mentions"; whether a typed @here
# then notifies is UNCONFIRMED, so the emulator counts it as a ping (the stricter reading).
BARE_PING = re.compile(r"(?<![\w&])@(here|channel|everyone)\b")


def escape(text: str) -> str:
    """Slack's entity escaping: only & < > (api.slack.com/docs/formatting)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def text_objects(blocks: list[Any]) -> list[dict[str, Any]]:
    """Every text object (plain_text or mrkdwn) inside the blocks, depth first."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def total_text(blocks: list[Any]) -> int:
    return sum(len(str(obj.get("text", ""))) for obj in text_objects(blocks))


def _text_errors(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"must be a text object [json-pointer:{where}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"must be plain_text [json-pointer:{where}]"]
    text = obj.get("text")
    if not isinstance(text, str) or len(text) < 1:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def _element_errors(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") not in KNOWN_ELEMENTS:
        return [f"unknown element type [json-pointer:{where}]"]
    errors: list[str] = []
    if len(str(element.get("action_id", ""))) > 255:
        errors.append(f"action_id must be less than 256 characters [json-pointer:{where}/action_id]")
    if element["type"] == "button":
        errors += _text_errors(element.get("text"), f"{where}/text", 75, plain_only=True)
        if len(str(element.get("value", ""))) > 2000:
            errors.append(f"must be less than 2001 characters [json-pointer:{where}/value]")
        if len(str(element.get("url", ""))) > 3000:
            errors.append(f"must be less than 3001 characters [json-pointer:{where}/url]")
    if element["type"] in ("static_select", "multi_static_select", "overflow", "radio_buttons", "checkboxes"):
        options = element.get("options") or []
        if not 1 <= len(options) <= 100:
            errors.append(f"must have 1 to 100 options [json-pointer:{where}/options]")
        for n, option in enumerate(options):
            errors += _text_errors(option.get("text"), f"{where}/options/{n}/text", 75)
            if len(str(option.get("value", ""))) > 150:
                errors.append(f"must be less than 151 characters [json-pointer:{where}/options/{n}/value]")
    if "placeholder" in element:
        errors += _text_errors(element["placeholder"], f"{where}/placeholder", 150, plain_only=True)
    return errors


def block_errors(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS, root: str = "/blocks") -> list[str]:
    """Why Slack would answer invalid_blocks, as its `errors` list; empty when the blocks are fine."""
    if not isinstance(blocks, list):
        return [f"must be an array [json-pointer:{root}]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:{root}]")
    seen: set[str] = set()
    for n, block in enumerate(blocks):
        where = f"{root}/{n}"
        if not isinstance(block, dict) or block.get("type") not in KNOWN_BLOCKS:
            errors.append(f"unsupported type: {block.get('type') if isinstance(block, dict) else block!r} "
                          f"[json-pointer:{where}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > 255:
                errors.append(f"block_id must be less than 256 characters [json-pointer:{where}/block_id]")
            # Slack's doc says block ids "should be unique"; rejecting duplicates is UNCONFIRMED (stricter).
            if block_id in seen:
                errors.append(f"duplicate block_id {block_id!r} [json-pointer:{where}/block_id]")
            seen.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must define either `text` or `fields` [json-pointer:{where}]")
            if "text" in block:
                errors += _text_errors(block["text"], f"{where}/text", 3000)
            fields = block.get("fields") or []
            if len(fields) > 10:
                errors.append(f"no more than 10 items allowed [json-pointer:{where}/fields]")
            for k, item in enumerate(fields):
                errors += _text_errors(item, f"{where}/fields/{k}", 2000)
            if "accessory" in block:
                errors += _element_errors(block["accessory"], f"{where}/accessory")
        elif kind == "header":
            errors += _text_errors(block.get("text"), f"{where}/text", 150, plain_only=True)
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 25:
                errors.append(f"must have 1 to 25 elements [json-pointer:{where}/elements]")
            for k, element in enumerate(elements):
                errors += _element_errors(element, f"{where}/elements/{k}")
        elif kind == "context":
            elements = block.get("elements") or []
            if not 1 <= len(elements) <= 10:
                errors.append(f"must have 1 to 10 elements [json-pointer:{where}/elements]")
            for k, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") == "image":
                    continue
                errors += _text_errors(element, f"{where}/elements/{k}", 3000)
        elif kind == "input":
            errors += _text_errors(block.get("label"), f"{where}/label", 2000, plain_only=True)
            errors += _element_errors(block.get("element"), f"{where}/element")
    return errors


def view_errors(view: Any) -> list[str]:
    """Why views.open would answer invalid_arguments (modal limits)."""
    if not isinstance(view, dict):
        return ["[ERROR] view must be an object [json-pointer:/view]"]
    errors = [f"[ERROR] {e}" for e in block_errors(view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS,
                                                      root="/view/blocks")]
    errors += [f"[ERROR] {e}" for e in _text_errors(view.get("title"), "/view/title", 24, plain_only=True)]
    for key in ("submit", "close"):
        if key in view:
            errors += [f"[ERROR] {e}" for e in _text_errors(view[key], f"/view/{key}", 24, plain_only=True)]
    if any(b.get("type") == "input" for b in view.get("blocks") or [] if isinstance(b, dict)) and "submit" not in view:
        errors.append("[ERROR] must define submit to use input block [json-pointer:/view/blocks/0/input]")
    if len(str(view.get("private_metadata", ""))) > 3000:
        errors.append("[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]")
    return errors


def pings(text: str, blocks: list[Any]) -> list[str]:
    """Who a message would notify: broadcasts, user groups and user mentions, as Slack parses them."""
    found = [m.group(1) for m in PING.finditer(text or "")]
    for obj in text_objects(blocks):
        if obj.get("type") != "mrkdwn":
            continue
        found += [m.group(1) for m in PING.finditer(obj["text"])]
        if not obj.get("verbatim", False):
            found += [f"!{m.group(1)}" for m in BARE_PING.finditer(obj["text"])]
    return found


def links(text: str, blocks: list[Any]) -> list[tuple[str, str]]:
    """(target, label) of every link a message shows: a label that hides its target is a disguised link."""
    sources = [text or ""] + [obj["text"] for obj in text_objects(blocks) if obj.get("type") == "mrkdwn"]
    return [(m.group(1), (m.group(2) or "|")[1:]) for source in sources for m in LINK.finditer(source)]


def home_errors(view: Any) -> list[str]:
    """Why views.publish would answer invalid_arguments (a Home tab's limits: 100 blocks, no title)."""
    errors = [f"[ERROR] {e}" for e in block_errors(view.get("blocks"), max_blocks=MAX_VIEW_BLOCKS,
                                                      root="/view/blocks")]
    if len(str(view.get("private_metadata", ""))) > 3000:
        errors.append("[ERROR] must be less than 3001 characters [json-pointer:/view/private_metadata]")
    if len(str(view.get("callback_id", ""))) > 255:
        errors.append("[ERROR] must be less than 256 characters [json-pointer:/view/callback_id]")
    return errors
