"""Output benchmark: how fast the worker's process runner reads output of any line shape.

Runs real processes through `da.worker.runner.run_process` (tails, redaction, capped log)
and prints one table. The baseline is output with ordinary lines of the same size, measured
in the same run; output without newlines must cost about the same, and four times the bytes
about four times the time (a quadratic reader shows 16x).

    python bench/output_bench.py            # 8 and 32 MB (about a minute)
    python bench/output_bench.py --quick    # 2 and 8 MB
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from da.worker import runner
from da.worker.redact import Redactor

SHAPES = {
    "lines of 80": "line = b'x' * 79 + b'\\n'",
    "one line": "line = b'x' * 65536",
    "lines of 1 MB": "line = b'x' * (1024 * 1024 - 1) + b'\\n'",
}
# The credential a real worker redacts on every piece (as it is, disguised and in the forms the docs show).
SECRET = "bench-secret-value-0123456789"


def writer(shape: str, size: int) -> list[str]:
    code = (f"import sys\n{SHAPES[shape]}\nout = sys.stdout.buffer\nleft = {size}\n"
            "while left > 0:\n    out.write(line[:left])\n    left -= len(line)\n")
    return [sys.executable, "-c", code]


async def measure(shape: str, size: int, folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of this process (the reader) for one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = await runner.run_process(writer(shape, size), cwd=None, env=dict(os.environ), timeout=600,
                                      log_path=folder / "bench.log", redact=Redactor.from_env({"SECRET_KEY": SECRET}))
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - wall, time.process_time() - cpu


async def main(sizes: list[int], repeats: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            medians = {}
            for shape in SHAPES:
                runs = [await measure(shape, size, Path(tmp)) for _ in range(repeats)]
                medians[shape] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
            base_wall = medians["lines of 80"][0]
            for shape, (wall, cpu) in medians.items():
                rows.append((shape, size, wall, cpu, size / wall / 1e6, wall / base_wall))
    print(f"{'output':<15}{'MB':>6}{'wall s':>9}{'cpu s':>9}{'MB/s':>9}{'vs lines':>10}")
    for shape, size, wall, cpu, rate, ratio in rows:
        print(f"{shape:<15}{size / 1e6:>6.0f}{wall:>9.2f}{cpu:>9.2f}{rate:>9.1f}{ratio:>9.2f}x")
    small, large = sizes[0], sizes[-1]
    for shape in SHAPES:
        times = {size: wall for s, size, wall, *_ in rows if s == shape}
        print(f"{shape}: {large // small}x the bytes took {times[large] / times[small]:.1f}x the time")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke check")
    args = parser.parse_args()
    sizes = [2_000_000, 8_000_000] if args.quick else [8_000_000, 32_000_000]
    asyncio.run(main(sizes, repeats=3))
