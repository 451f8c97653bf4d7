"""`da service install queue|worker|bot`: a systemd user unit (Linux) or a launchd agent (macOS).

Both run `da <kind>` in the folder holding `.env`, which every da process reads from its
working directory, so no secret is copied into the unit file.
"""

from __future__ import annotations

import plistlib
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KINDS = {"queue": "serve", "worker": "worker", "bot": "bot"}
# File descriptors the queue may hold (it raises its soft limit to this hard limit at start and derives
# its connection caps from it): launchd's default of 256 would let a slow-loris take them all.
DESCRIPTORS = 10240


@dataclass(frozen=True)
class Service:
    """One unit to write: where, what, and the command that enables it."""

    path: Path
    text: str
    enable: str


def systemd_unit(kind: str, executable: Sequence[str], workdir: Path) -> str:
    """A systemd user unit; ExecStart quotes each argument (systemd accepts shell-style quotes)."""
    limit = f"LimitNOFILE={DESCRIPTORS}\n" if kind == "queue" else ""
    return f"""[Unit]
Description=da {kind} ({KINDS[kind]})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
WorkingDirectory={workdir}
EnvironmentFile=-{workdir / '.env'}
ExecStart={shlex.join([*executable, KINDS[kind]])}
Restart=always
RestartSec=2
# SIGTERM lets a worker finish running tasks within SHUTDOWN_GRACE.
KillSignal=SIGTERM
TimeoutStopSec=60
{limit}
[Install]
WantedBy=default.target
"""


def launchd_plist(kind: str, executable: Sequence[str], workdir: Path, logs: Path) -> str:
    """A launchd agent; launchd runs no shell, so every argument is its own element."""
    limits = {"NumberOfFiles": DESCRIPTORS} if kind == "queue" else None
    return plistlib.dumps({
        "Label": f"com.da.{kind}",
        "ProgramArguments": [*executable, KINDS[kind]],
        "WorkingDirectory": str(workdir),
        "RunAtLoad": True,
        "KeepAlive": True,
        "StandardOutPath": str(logs / f"{kind}.log"),
        "StandardErrorPath": str(logs / f"{kind}.log"),
        **({"SoftResourceLimits": limits, "HardResourceLimits": limits} if limits else {}),
    }).decode()


def plan(kind: str, *, system: str, home: Path, workdir: Path, executable: Sequence[str]) -> Service:
    """The unit for this kind on this system, without writing anything."""
    if kind not in KINDS:
        raise ValueError(f"unknown service {kind!r}; use queue, worker or bot.")
    if system == "linux":
        path = home / ".config" / "systemd" / "user" / f"da-{kind}.service"
        return Service(path, systemd_unit(kind, executable, workdir),
                       f"systemctl --user daemon-reload && systemctl --user enable --now da-{kind}.service")
    if system == "macos":
        path = home / "Library" / "LaunchAgents" / f"com.da.{kind}.plist"
        return Service(path, launchd_plist(kind, executable, workdir, workdir / "data" / "logs"),
                       f"launchctl load -w {path}")
    raise ValueError(f"unsupported system {system!r}; da services run on linux (systemd) or macos (launchd).")


def current_system() -> str:
    """This machine as `plan` names systems."""
    return "macos" if sys.platform == "darwin" else "linux" if sys.platform.startswith("linux") else sys.platform
