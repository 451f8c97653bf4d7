#!/usr/bin/env python3
"""A stand-in for claude/gemini/codex/npm/gradle/...: prints what it was asked as JSON, like a
CLI prints an answer, and fails the ways the real tools fail when the prompt or folder asks.

The three agent CLIs parse their argv as strictly as the real ones: claude (commander: `-p`
is a flag, the prompt is positional, `--` ends options), gemini (yargs: the prompt is the
value of `-p/--prompt`, and a value starting with `-` is taken for a flag unless joined with
`=`) and `codex exec` (clap: the prompt is positional, `--` ends options, `-` reads stdin).
A prompt that would be read as an option fails here as it would there.
"""

import json
import os
import sys
import time

# option -> takes a value
AGENT_OPTIONS = {
    "claude": {"-p": False, "--print": False, "--dangerously-skip-permissions": False, "--model": True,
               "--output-format": True},
    "gemini": {"-y": False, "--yolo": False, "-p": True, "--prompt": True, "-m": True, "--model": True},
    "codex": {"--full-auto": False, "-m": True, "--model": True, "-c": True, "--config": True, "-C": True,
              "--skip-git-repo-check": False},
}


def refuse(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def parse_agent(name: str, args: list[str]) -> dict:
    """The prompt and options as the real CLI would read them, or its error."""
    if name == "codex":
        if not args or args[0] != "exec":
            refuse("error: codex runs headless only as `codex exec`", 2)
        args = args[1:]
    known = AGENT_OPTIONS[name]
    options: dict = {}
    positionals: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positionals += args[index:]
            break
        if arg.startswith("-") and arg != "-":
            key, joined, value = arg.partition("=")
            if key not in known:
                refuse({"claude": f"error: unknown option '{arg}'", "gemini": f"Unknown argument: {key.lstrip('-')}",
                        "codex": f"error: unexpected argument '{arg}' found"}[name], 1 if name != "codex" else 2)
            if known[key] and not joined:
                if index >= len(args) or (args[index].startswith("-") and name == "gemini"):
                    refuse(f"Not enough arguments following: {key.lstrip('-')}", 1)
                value = args[index]
                index += 1
            options[key] = value if known[key] else True
        else:
            positionals.append(arg)
    prompt = options.get("-p") or options.get("--prompt") if name == "gemini" else None
    if name != "gemini":
        if len(positionals) > 1:
            refuse(f"error: too many arguments: {positionals[1:]}", 1 if name == "claude" else 2)
        prompt = positionals[0] if positionals else None
        if name == "codex" and prompt == "-":
            prompt = sys.stdin.read()
    elif positionals:
        refuse(f"gemini: a positional prompt opens the interactive mode: {positionals}", 1)
    if name == "claude" and not (options.get("-p") or options.get("--print")):
        refuse("claude: without -p it opens the interactive mode", 1)
    if not prompt:
        refuse(f"{name}: no prompt given", 1)
    return {"prompt": prompt, "model": options.get("--model") or options.get("-m")}


name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
parsed = parse_agent(name, args) if name in AGENT_OPTIONS else {}
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
print(json.dumps({"tool": name, "argv": args, "cwd": os.getcwd(), **parsed}))
