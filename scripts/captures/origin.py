#!/usr/bin/env python3
"""Origin servers for scripts/make-captures, run inside the pw-origin netns.

usage: origin.py CONFIG.json
CONFIG: {"listeners": [{"addr": "10.77.2.10", "port": 443, "kind": "tls",
          "cert": "leaf.pem", "key": "leaf.key", "client_ca": null}, ...]}
kind "tls": HTTPS (HTTP/1.0 replies) with the given certificate; "client_ca"
set = demand and verify a client certificate. kind "http": plain HTTP.
kind "sink": reads whatever arrives and answers one line.
"""
import http.server
import json
import socket
import socketserver
import ssl
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pinwatch-origin/1.0"
    timeout = 10

    def do_GET(self):
        body = (f"hello from origin {self.headers.get('Host', '?')} path {self.path}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx):
        self.ctx = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass


class PlainServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class SinkHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        try:
            self.request.recv(4096)
            self.request.sendall(b"ERR unknown command\r\n")
        except OSError:
            pass


class SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    cfg = json.load(open(sys.argv[1]))
    servers = []
    for l in cfg["listeners"]:
        addr = (l["addr"], l["port"])
        if l["kind"] == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if l.get("max_tls") == "1.2":
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(l["cert"], l["key"])
            if l.get("client_ca"):
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(l["client_ca"])
            servers.append(TLSServer(addr, ctx))
        elif l["kind"] == "http":
            servers.append(PlainServer(addr, Handler))
        elif l["kind"] == "sink":
            servers.append(SinkServer(addr, SinkHandler))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("origin ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
