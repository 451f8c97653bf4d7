#!/usr/bin/env python3
"""A stand-in for claude/gemini/codex/npm/gradle/...: prints what it was asked as JSON, like a
CLI prints an answer, and fails the ways the real tools fail when the prompt or folder asks.

The three agent CLIs parse their argv as strictly as the real ones: claude (commander: `-p`
is a flag, the prompt is positional, `--` ends options), gemini (yargs: the prompt is the
value of `-p/--prompt`, and a value starting with `-` is taken for a flag unless joined with
`=`) and `codex exec` (clap: the prompt is positional, `--` ends options, `-` reads stdin,
`resume <SESSION_ID> [PROMPT]` is a subcommand after exec's own options). A prompt that would
be read as an option fails here as it would there.

Sessions work as in the real CLIs. `claude -p --output-format json` prints one result object
(`result`, `session_id`, `is_error` ...); its sessions belong to the folder they ran in, and
`--resume <id>` from another folder finds nothing. `codex exec --json` prints JSONL events
(`thread.started` with the thread id, items, the answer as the last `agent_message`). Each
session's turns are kept under the fake's own folder, so a resumed run's answer lists the
earlier turns it saw. FAKE_CLAUDE_FORK=1 makes claude answer a resume under a new session id,
as Claude Code did before 1.0.x and does with --fork-session (the old id keeps only its turns).
Every agent run appends its argv, folder, added folders (claude and codex `--add-dir`, gemini
`--include-directories`, each repeatable) and start/end to `calls.jsonl` there; WRITE=<file> in the
prompt makes it edit that file in its folder, ALSO_WRITE=<file> in each added folder. OVERLOADED in
a prompt makes claude and codex report an API error the way their JSON output does.
"""

import hashlib
import json
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(sys.argv[0]))
CALLS = os.path.join(HERE, "calls.jsonl")
# option -> takes a value
AGENT_OPTIONS = {
    "claude": {"-p": False, "--print": False, "--dangerously-skip-permissions": False, "--model": True,
               "--output-format": True, "-r": True, "--resume": True, "--fork-session": False, "--add-dir": True},
    "gemini": {"-y": False, "--yolo": False, "-p": True, "--prompt": True, "-m": True, "--model": True,
               "--include-directories": True},
    "codex": {"--full-auto": False, "-m": True, "--model": True, "-c": True, "--config": True, "-C": True,
              "--skip-git-repo-check": False, "--json": False, "--experimental-json": False, "--add-dir": True},
}
# Options that may be given more than once, each adding a folder.
ADD_DIR_OPTIONS = ("--add-dir", "--include-directories")
# Options `codex exec` also takes after `resume` (clap `global = true`); resume's own
# (--last, --all, -i) are not used by da and are refused here.
CODEX_GLOBAL = ("--full-auto", "-m", "--model", "--skip-git-repo-check", "--json", "--experimental-json")
CODEX_RESUME = {option: AGENT_OPTIONS["codex"][option] for option in CODEX_GLOBAL}
OUTPUT_FORMATS = ("text", "json", "stream-json")


def refuse(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def unknown(name: str, arg: str) -> None:
    key = arg.partition("=")[0]
    refuse({"claude": f"error: unknown option '{arg}'", "gemini": f"Unknown argument: {key.lstrip('-')}",
            "codex": f"error: unexpected argument '{arg}' found"}[name], 1 if name != "codex" else 2)


def parse_options(name: str, args: list[str], known: dict, options: dict, positionals: list[str],
                  subcommands: tuple[str, ...] = ()) -> list[str] | None:
    """Fill options and positionals; returns the arguments after a subcommand name, if one came."""
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positionals += args[index:]
            return None
        if arg.startswith("-") and arg != "-":
            key, joined, value = arg.partition("=")
            if key not in known:
                unknown(name, arg)
            if known[key] and not joined:
                # yargs, and commander for an optional value (`-r, --resume [id]`), take a
                # following `-x` for the next option rather than for this one's value.
                dashed = index < len(args) and args[index].startswith("-")
                if index >= len(args) or (dashed and (name == "gemini" or key in ("-r", "--resume"))):
                    if key in ("-r", "--resume"):
                        refuse("Error: --resume requires a valid session ID when used with --print", 1)
                    refuse(f"Not enough arguments following: {key.lstrip('-')}", 1)
                value = args[index]
                index += 1
            if key in ADD_DIR_OPTIONS:
                options.setdefault("add_dirs", []).extend(part for part in value.split(",") if part)
            else:
                options[key] = value if known[key] else True
        elif not positionals and arg in subcommands:
            return args[index:]
        else:
            positionals.append(arg)
    return None


def parse_agent(name: str, args: list[str]) -> dict:
    """The prompt, options and session to resume as the real CLI would read them, or its error."""
    if name == "codex":
        if not args or args[0] != "exec":
            refuse("error: codex runs headless only as `codex exec`", 2)
        args = args[1:]
    options: dict = {}
    positionals: list[str] = []
    rest = parse_options(name, args, AGENT_OPTIONS[name], options, positionals,
                         ("resume",) if name == "codex" else ())
    resume = options.get("--resume") or options.get("-r")
    if rest is not None:
        resumed: list[str] = []
        parse_options(name, rest, CODEX_RESUME, options, resumed)
        if not resumed:
            refuse("error: codex exec resume needs a SESSION_ID (or --last)", 2)
        resume, positionals = resumed[0], resumed[1:]
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
    if name == "claude" and options.get("--output-format", "text") not in OUTPUT_FORMATS:
        refuse(f"error: option '--output-format <format>' argument '{options['--output-format']}' is invalid. "
               f"Allowed choices are {', '.join(OUTPUT_FORMATS)}.", 1)
    if not prompt:
        refuse(f"{name}: no prompt given", 1)
    return {"prompt": prompt, "model": options.get("--model") or options.get("-m"), "resume": resume,
            "options": options, "add_dirs": options.get("add_dirs", [])}


def session_file(name: str, session: str) -> str:
    """Claude keeps a session per project folder; codex keeps them all in one place."""
    folder = os.path.join(HERE, f"{name}-sessions")
    if name == "claude":
        folder = os.path.join(folder, hashlib.sha256(os.getcwd().encode()).hexdigest()[:16])
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{session}.json")


def load_session(name: str, session: str) -> list:
    """The session's earlier turns, or the real CLI's error when it has none here."""
    try:
        with open(session_file(name, session)) as handle:
            return json.load(handle)
    except FileNotFoundError:
        if name == "claude":
            refuse(f"No conversation found with session ID: {session}", 1)
        refuse(f"Error: thread/resume: no rollout found for thread id {session}", 1)
    return []


def record(event: str, **fields) -> None:
    with open(CALLS, "a") as log:
        log.write(json.dumps({"event": event, "tool": name, "pid": os.getpid(), **fields}) + "\n")


def hold(text: str) -> None:
    """HOLD_UNTIL=<path> in the prompt: keep working until that file exists (at most a minute);
    codex --json holds in the middle of its events, while it runs a command."""
    marker = text.split("HOLD_UNTIL=", 1)[1].split()[0]
    deadline = time.monotonic() + 60
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.02)


def converse(parsed: dict, answer: dict) -> tuple[str, str]:
    """Continue or start the session; returns (session id, answer text) and saves the turns."""
    resume = parsed["resume"]
    history = load_session(name, resume) if resume else []
    fork = name == "claude" and (os.environ.get("FAKE_CLAUDE_FORK") == "1" or parsed["options"].get("--fork-session"))
    session = resume if resume and not fork else str(uuid.uuid4())
    text = json.dumps({**answer, "history": history})
    with open(session_file(name, session), "w") as handle:
        json.dump([*history, {"role": "user", "text": parsed["prompt"]}, {"role": "assistant", "text": text}], handle)
    return session, text


def print_claude(parsed: dict, answer: dict) -> None:
    session, text = converse(parsed, answer)
    if "OVERLOADED" in parsed["prompt"]:
        print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "result":
                          "API Error: 529 Overloaded", "session_id": session}))
        sys.exit(1)
    if parsed["options"].get("--output-format", "text") == "text":
        print(text)
        return
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "duration_ms": 12,
                      "duration_api_ms": 9, "num_turns": 1, "result": text, "session_id": session,
                      "total_cost_usd": 0.0012, "usage": {"input_tokens": 10, "output_tokens": 20}}))


def print_codex(parsed: dict, answer: dict) -> None:
    session, text = converse(parsed, answer)
    holding = "HOLD_UNTIL=" in parsed["prompt"]
    if not (parsed["options"].get("--json") or parsed["options"].get("--experimental-json")):
        if holding:
            hold(parsed["prompt"])
        print(f"OpenAI Codex (fake)\n--------\nworkdir: {os.getcwd()}\nsession id: {session}\n--------",
              file=sys.stderr)
        print(text)
        return
    if "OVERLOADED" in parsed["prompt"]:
        print(json.dumps({"type": "thread.started", "thread_id": session}))
        print(json.dumps({"type": "turn.failed", "error": {"message": "stream disconnected: 529 Overloaded"}}))
        sys.exit(1)
    command = {"id": "item_0", "type": "command_execution", "command": "bash -lc ls", "aggregated_output": "",
               "exit_code": None, "status": "in_progress"}
    for event in ({"type": "thread.started", "thread_id": session}, {"type": "turn.started"},
                  {"type": "item.completed", "item": {"id": "item_r", "type": "reasoning", "text": "**Looking**"}},
                  {"type": "item.started", "item": command},
                  {"type": "item.completed", "item": {**command, "aggregated_output": "README.md\n", "exit_code": 0,
                                                      "status": "completed"}},
                  {"type": "item.completed", "item": {"id": "item_1", "type": "agent_message", "text": text}},
                  {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 0,
                                                       "output_tokens": 20}}):
        print(json.dumps(event), flush=True)
        if holding and event["type"] == "item.started":
            hold(parsed["prompt"])


name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
parsed = parse_agent(name, args) if name in AGENT_OPTIONS else {}
text = " ".join(args)
if name in AGENT_OPTIONS:
    record("start", argv=args, cwd=os.getcwd(), add_dirs=parsed["add_dirs"])
if "NOT_LOGGED_IN" in text:
    print(f"Error: {name} is not logged in. Please run /login", file=sys.stderr)
    sys.exit(1)
if "UNAUTHORIZED" in text:
    print("API Error: 401 Unauthorized", file=sys.stderr)
    sys.exit(1)
if "SLEEP" in text:
    time.sleep(60)
if "WRITE=" in text:
    # WRITE=<file>: edit a file in the folder it runs in, as an agent editing code would.
    with open(text.split("WRITE=", 1)[1].split()[0], "a") as edited:
        edited.write(f"edited by {name} {os.getpid()}\n")
if "ALSO_WRITE=" in text:
    for folder in parsed.get("add_dirs", []):
        with open(os.path.join(folder, text.split("ALSO_WRITE=", 1)[1].split()[0]), "a") as edited:
            edited.write(f"edited by {name} {os.getpid()} from {os.getcwd()}\n")
if "HOLD_UNTIL=" in text and name != "codex":
    hold(text)
if os.path.exists("FAIL"):
    print("compiling...")
    print(f"error: {name} build failed in {os.getcwd()}", file=sys.stderr)
    sys.exit(2)
answer = {"tool": name, "argv": args, "cwd": os.getcwd(),
          **{k: v for k, v in parsed.items() if k in ("prompt", "model", "resume")}}
if name == "claude":
    print_claude(parsed, answer)
elif name == "codex":
    print_codex(parsed, answer)
else:
    if name == "gemini":
        print("Loaded cached credentials.")  # as gemini prints on stdout in several versions
    print(json.dumps(answer))
if name in AGENT_OPTIONS:
    record("end", argv=args, cwd=os.getcwd())
