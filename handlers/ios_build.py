"""Build an iOS app: the given command, else flutter for a Flutter project, else xcodebuild."""

from __future__ import annotations

from typing import Any

from da.handlers import _detect
from da.handlers.api import Context, Result, text_field, timeout_field

TYPE = "ios_build"
# A build writes only derived data.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 3600.0
# The payload field naming the project folder; assign asks for it (--cwd) up front.
FOLDER_FIELD = "cwd"


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    cwd = ctx.check_cwd(text_field(payload, "cwd", required=True))
    assert cwd is not None
    argv = _detect.command_field(text_field(payload, "command"))
    if argv is None:
        if (cwd / "pubspec.yaml").exists():
            argv = ["flutter", "build", "ios", "--no-codesign"]
        else:
            argv = ["xcodebuild", *_detect.xcode_container(cwd), "build"]
            scheme = text_field(payload, "scheme")
            if scheme:
                argv[1:1] = ["-scheme", scheme]
    process = await ctx.run(argv, cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT))
    return ctx.classify(process, tool=argv[0])
