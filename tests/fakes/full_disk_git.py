#!/usr/bin/env python3
"""`git` as on a full disk: `worktree add` and `commit` fail with ENOSPC's message; everything else
runs the real git named by REAL_GIT."""

import os
import sys

args = sys.argv[1:]
if ("worktree" in args and "add" in args) or "commit" in args:
    print("fatal: could not create leading directories of 'x': No space left on device", file=sys.stderr)
    sys.exit(128)
os.execv(os.environ["REAL_GIT"], ["git", *args])
