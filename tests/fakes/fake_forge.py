#!/usr/bin/env python3
"""A stand-in for the GitHub CLI `gh` and the GitLab CLI `glab` (linked under either name): records
its argv and folder in `forge-calls.jsonl` beside the link and prints the URL the real one would.

`auth status` fails as when logged out if FAKE_FORGE_LOGGED_OUT=1; `pr create` / `mr create` print
a pull/merge request URL on the host of the folder's `origin` remote; `pr edit` / `mr update`
succeed silently.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(sys.argv[0]))
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(os.path.join(HERE, "forge-calls.jsonl"), "a") as log:
    log.write(json.dumps({"tool": name, "argv": args, "cwd": os.getcwd()}) + "\n")

if args[:2] == ["auth", "status"]:
    if os.environ.get("FAKE_FORGE_LOGGED_OUT") == "1":
        host = "github.com" if name == "gh" else "gitlab.com"
        print(f"You are not logged into any {host.split('.')[0].title()} hosts. Run {name} auth login to "
              "authenticate.", file=sys.stderr)
        sys.exit(1)
    print("Logged in as fake-user", file=sys.stderr)
    sys.exit(0)
if args[:2] in (["pr", "create"], ["mr", "create"]):
    remote = subprocess.run(["git", "config", "--get", "remote.origin.url"], capture_output=True, text=True).stdout
    url = remote.strip()
    path = (url.split("://", 1)[1].split("/", 1)[-1] if "://" in url else url.split(":", 1)[-1]).removesuffix(".git")
    if name == "gh":
        print(f"https://github.com/{path}/pull/7")
    else:
        print(f"https://gitlab.com/{path}/-/merge_requests/7")
    sys.exit(0)
if args[:2] in (["pr", "edit"], ["mr", "update"]):
    sys.exit(0)
print(f"{name}: unknown command {' '.join(args)}", file=sys.stderr)
sys.exit(1)
