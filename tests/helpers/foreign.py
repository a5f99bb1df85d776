"""Another user's HTTP service on a loopback port the OS picks."""

import http.server
import threading


class _ForeignHandler(http.server.BaseHTTPRequestHandler):
    """Another user's service on a port the runner might pick: /health says 200 (as any vLLM would), everything
    else 404. The server's `seen` lists the paths it was asked for."""

    def do_GET(self):
        self.server.seen.append(self.path)
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def serve_foreign(port: int = 0) -> http.server.ThreadingHTTPServer:
    """A foreign HTTP server on a loopback port (0: a free one), in a daemon thread; `.shutdown()` it when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _ForeignHandler)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
