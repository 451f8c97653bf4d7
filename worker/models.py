"""The handler API under its old name, so handlers written before `da.handlers.api` still load."""

from __future__ import annotations

from da.handlers.api import DONE as DONE
from da.handlers.api import FAILED as FAILED
from da.handlers.api import MAX_TIMEOUT as MAX_TIMEOUT
from da.handlers.api import NEEDS_HUMAN as NEEDS_HUMAN
from da.handlers.api import Context as Context
from da.handlers.api import ProcessResult as ProcessResult
from da.handlers.api import Result as Result
from da.handlers.api import text_field as text_field
from da.handlers.api import timeout_field as timeout_field
