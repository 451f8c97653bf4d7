"""Every Slack listener, registered one kind at a time (as in bolt-python's app template).

Add a kind (events, shortcuts, App Home) as a module with `register(app)` and call it here.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from da.bot.slack.listeners import actions, asks, commands, deliver, errors, events, forms, views


def register(app: AsyncApp) -> None:
    commands.register(app)
    actions.register(app)
    asks.register(app)
    deliver.register(app)
    views.register(app)
    events.register(app)
    forms.register(app)
    errors.register(app)
