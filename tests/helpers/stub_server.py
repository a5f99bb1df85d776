"""A stand-in for `vllm serve` as a real process (no engine), for the host's server faults: started by a VllmServer
whose argv is `python stub_server.py --config FILE` (the file the runner writes: its port and served model name),
with the run's key in VLLM_API_KEY. It answers /v1/models, /health, /metrics and /v1/completions; a prompt with
POISON in it kills the process at once (an engine that crashes on a line: every request in flight is cut), a prompt
with MALFORMED in it gets 200 with no choices, a prompt "SLOW:<s> ..." is answered after <s> seconds, others after
0.05 s. Each request is logged ("received <prompt>"). With STUB_FAIL_STARTS=<file>, a start while the file holds a
number above 0 counts it down and exits as a failed engine start would."""

import http.server
import json
import os
import sys
import time
from pathlib import Path

import yaml


def _fail_start() -> None:
    counter = os.environ.get("STUB_FAIL_STARTS")
    if counter and int(Path(counter).read_text() or 0) > 0:
        Path(counter).write_text(str(int(Path(counter).read_text()) - 1))
        print("RuntimeError: stub engine failed to start (STUB_FAIL_STARTS)", flush=True)
        sys.exit(1)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {os.environ['VLLM_API_KEY']}":
            return self._answer(401, b"{}")
        if self.path == "/v1/models":
            return self._answer(200, json.dumps({"data": [{"id": self.server.served}]}).encode())
        if self.path == "/metrics":  # always moving: the stub never looks hung while it answers
            return self._answer(200, f"vllm:generation_tokens_total {time.monotonic()}\n".encode())
        self._answer(200, b"")

    def do_POST(self):
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
        sys.stdout.write(f"received {prompt}\n")  # one write: a line of its own beside the other threads'
        sys.stdout.flush()
        if "POISON" in prompt:
            os._exit(1)
        time.sleep(float(prompt.split()[0][5:]) if prompt.startswith("SLOW:") else 0.05)
        if "MALFORMED" in prompt:  # 200, but no answer in it (a proxy's or a broken server's body)
            return self._answer(200, json.dumps({"object": "error", "choices": []}).encode())
        body = {"choices": [{"text": f"ok {prompt}", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        self._answer(200, json.dumps(body).encode())

    def log_message(self, *args):
        pass


def main() -> None:
    config = yaml.safe_load(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
    _fail_start()
    server = http.server.ThreadingHTTPServer((config["host"], config["port"]), _Handler)
    server.served = config["served-model-name"]
    server.daemon_threads = True
    print("stub serving on", config["port"], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
