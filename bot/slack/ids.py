"""The ids that tie what the bot draws to what it listens for: every button's and menu's
`action_id`, every modal's `callback_id`, the shortcuts' callback ids. The block builders draw
with these names and the listeners register on them, so a rename cannot break one side alone
(a structure test checks that every action drawn has a listener).
"""

from __future__ import annotations

from da.queue import models

# A suggestion card (`/da assign` without --yes): confirm, cancel, or change one of its menus.
SUGGEST_CONFIRM = "suggest_confirm"
SUGGEST_CANCEL = "suggest_cancel"
SUGGEST_MENUS = {"machine": "suggest_machine", "agent": "suggest_agent", "type": "suggest_type"}
# A review or failure card: resolve as each status, or open the note modal.
RESOLVE = {status: f"resolve_{status}" for status in models.RESOLVE_TO}
NOTE_OPEN = "note_open"
# A running task's card.
CANCEL_TASK = "cancel_task"
# A `resolve all` preview.
BULK_CONFIRM = "bulk_confirm"
BULK_CANCEL = "bulk_cancel"
# A burst summary's Review / Failures buttons.
OPEN_REVIEW = "open_review"
# The Home tab's New task button.
HOME_NEW_TASK = "home_new_task"

# An agent's ask in its thread: one id per option button (ids are unique within a block), the
# "With a note…" button, and the Stop button of a running agent's progress.
ASK_ANSWERS = tuple(f"ask_answer_{n}" for n in range(25))
ASK_NOTE = "ask_note"
# An agent's result: post its diff in the thread; open its pull request (a link button, acked only).
WORKSPACE_DIFF = "workspace_diff"
OPEN_PULL_REQUEST = "open_pull_request"
# Delivering a result's work after the fact (listeners/deliver.py): push its branch; push and open its PR/MR.
WORKSPACE_PUSH = "workspace_push"
WORKSPACE_OPEN_PR = "workspace_open_pr"

# Modals, by callback_id.
NOTE_SUBMIT = "note_submit"
NEW_TASK_SUBMIT = "new_task_submit"
ASK_NOTE_SUBMIT = "ask_note_submit"

# Shortcuts, as config/slack-manifest.yaml declares them.
GLOBAL_SHORTCUT = "da_new_task"
MESSAGE_SHORTCUT = "da_send_to_agent"

ACTIONS = frozenset({SUGGEST_CONFIRM, SUGGEST_CANCEL, *SUGGEST_MENUS.values(), *RESOLVE.values(), NOTE_OPEN,
                     CANCEL_TASK, BULK_CONFIRM, BULK_CANCEL, OPEN_REVIEW, HOME_NEW_TASK, *ASK_ANSWERS, ASK_NOTE,
                     WORKSPACE_DIFF, OPEN_PULL_REQUEST, WORKSPACE_PUSH, WORKSPACE_OPEN_PR})
