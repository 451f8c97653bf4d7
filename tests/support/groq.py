"""A loopback stand-in for Groq's OpenAI-compatible chat API, served from a thread of its own: a worker that
outlives one test (a module's shared worker) can keep using it whatever event loop each test runs in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GROQ_KEY = "gsk_test_groq_key_123456"


class Completions(BaseHTTPRequestHandler):
    """POST /openai/v1/chat/completions: the last message echoed with the model and the earlier turns."""

    def do_POST(self) -> None:
        if self.path != "/openai/v1/chat/completions":
            self.answer(404, {"error": {"message": "Unknown request URL"}})
        elif self.headers.get("Authorization") != f"Bearer {GROQ_KEY}":
            self.answer(401, {"error": {"message": "Invalid API Key"}})
        else:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            *earlier, last = body["messages"]
            answer = f"groq says: {last['content']} ({body['model']})" + "".join(
                f" [{turn['role']}: {turn['content']}]" for turn in earlier)
            self.answer(200, {"choices": [{"message": {"role": "assistant", "content": answer}}]})

    def answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def groq_stand_in() -> Iterator[str]:
    """The stand-in's base URL (GROQ_BASE_URL) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    thread = threading.Thread(target=server.serve_forever, name="groq stand-in", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/openai/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
