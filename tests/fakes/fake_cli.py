#!/usr/bin/env python3
"""A stand-in for claude/gemini/codex/npm/gradle/...: prints its argv as JSON like a CLI prints
an answer, and fails the ways the real tools fail when the prompt or folder asks it to."""

import json
import os
import sys
import time

name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
text = " ".join(args)
if "NOT_LOGGED_IN" in text:
    print(f"Error: {name} is not logged in. Please run /login", file=sys.stderr)
    sys.exit(1)
if "UNAUTHORIZED" in text:
    print("API Error: 401 Unauthorized", file=sys.stderr)
    sys.exit(1)
if "SLEEP" in text:
    time.sleep(60)
if os.path.exists("FAIL"):
    print("compiling...")
    print(f"error: {name} build failed in {os.getcwd()}", file=sys.stderr)
    sys.exit(2)
print(json.dumps({"tool": name, "argv": args, "cwd": os.getcwd()}))
