"""How fast the terminal client answers: one-shot verbs against a running queue.

Starts a real `da serve` on a free loopback port, queues a few tasks, then times each
command as a fresh process, the way a person runs it, interleaved round by round so load
from elsewhere hits all of them alike. The floor is `python -c "import httpx"` timed in the
same rounds: no client can answer faster than it can import its HTTP library.

Targets: `da queue`, `da status` and `da show` within 2x the floor; `da --help` under 0.15 s.

    python bench/client_bench.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SECRET = "bench-secret-0123456789"
FLOOR = "python -c 'import httpx'"
# A verb may take this many times the floor (the target).
RATIO_TARGET = 2.0
HELP_TARGET = 0.15


def da_command() -> list[str]:
    """The `da` console script beside this Python (what a person runs), else `python -m da.cli`."""
    script = Path(sys.executable).with_name("da")
    return [str(script)] if script.exists() else [sys.executable, "-m", "da.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_queue(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SECRET_KEY": SECRET, "QUEUE_PORT": str(port), "QUEUE_DB_PATH": str(folder / "q.db"),
           "DA_CONFIG_DIR": str(folder), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([*da_command(), "serve"], env=env, cwd=folder, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health")
            return process, url
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the queue did not start") from None
            time.sleep(0.05)


def seed(url: str) -> str:
    """A few tasks to list; returns the short id `show` asks for."""
    headers = {"x-secret-key": SECRET}
    ids = [httpx.post(f"{url}/v1/tasks", headers=headers,
                      json={"type": "run_script", "payload": {"script": f"echo {n}"}}).json()["id"]
           for n in range(20)]
    return ids[0][:8]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.decode()[-300:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="da-client-bench-"))
    queue, url = start_queue(folder)
    try:
        short_id = seed(url)
        env = {"PATH": os.environ["PATH"], "HOME": str(folder), "QUEUE_URL": url, "SECRET_KEY": SECRET,
               "NO_COLOR": "1"}
        da = da_command()
        commands = {FLOOR: [sys.executable, "-c", "import httpx"], "da --help": [*da, "--help"],
                    "da queue": [*da, "queue"], "da status": [*da, "status"], "da show": [*da, "show", short_id]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():
            timed(argv, env, folder)  # warm the page cache once
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(timed(argv, env, folder))
    finally:
        queue.terminate()
        queue.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians[FLOOR]
    rows = []
    missed = []
    for name, median in medians.items():
        ratio = median / floor
        if name == FLOOR:
            target, ok = "baseline", True
        elif name == "da --help":
            target, ok = f"< {HELP_TARGET:.2f} s", median < HELP_TARGET
        else:
            target, ok = f"< {RATIO_TARGET:g}x", ratio < RATIO_TARGET
        if not ok:
            missed.append(name)
        rows.append((name, f"{median:.3f}", f"{min(times[name]):.3f}", f"{ratio:.2f}x", target,
                     "ok" if ok else "MISSED"))
    headers = ("command", "median s", "best s", "vs floor", "target", "")
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(json.dumps({"rounds": args.rounds, "medians": {k: round(v, 4) for k, v in medians.items()}}))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
