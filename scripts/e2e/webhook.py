#!/usr/bin/env python3
"""A rule engine's webhook endpoint for scripts/e2e-live: accepts POSTed JSON and appends each
body, as one line, to OUT. Replies 200 to valid JSON, 400 otherwise.

usage: webhook.py HOST PORT OUT
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        try:
            value = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        with open(OUT, "a") as f:
            f.write(json.dumps(value, sort_keys=True) + "\n")
        with open(OUT + ".log", "a") as f:
            f.write(f"{time.time():.3f} {self.headers.get('Content-Type')} "
                    f"{self.headers.get('User-Agent')} {value.get('id')} {value.get('confidence')}\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer((HOST, PORT), Handler)
print("webhook ready", flush=True)
server.serve_forever()
