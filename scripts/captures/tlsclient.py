#!/usr/bin/env python3
"""Small TLS client used by scripts/make-captures (Python `ssl`).

Connects either straight to HOST:PORT or through an explicit HTTP proxy
(CONNECT), does a TLS handshake with SNI=HOST, then either sends one HTTP GET
("get"), or idles and closes without sending anything ("idle:SECONDS").
Prints one result line; exit status 0 on success, 1 on TLS/verify failure.
"""
import argparse
import socket
import ssl
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--proxy", help="HOST:PORT of an explicit HTTP proxy")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--tls", choices=["1.2", "1.3", "any"], default="any")
    ap.add_argument("--action", default="get")
    ap.add_argument("--timeout", type=float, default=8.0)
    a = ap.parse_args()

    ctx = ssl.create_default_context(cafile=a.cafile)
    if a.tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    elif a.tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])

    if a.proxy:
        ph, pp = a.proxy.rsplit(":", 1)
        raw = socket.create_connection((ph, int(pp)), timeout=a.timeout)
        raw.sendall(f"CONNECT {a.host}:{a.port} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = raw.recv(4096)
            if not chunk:
                break
            buf += chunk
        status = buf.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 200" not in status:
            print(f"proxy refused: {status!r}")
            raw.close()
            return 2
    else:
        raw = socket.create_connection((a.host, a.port), timeout=a.timeout)

    try:
        s = ctx.wrap_socket(raw, server_hostname=a.host)
    except (ssl.SSLError, OSError) as e:
        print(f"handshake failed: {e}")
        raw.close()
        return 1
    print(f"handshake ok: {s.version()} {s.cipher()[0]}")
    if a.action.startswith("idle:"):
        time.sleep(float(a.action.split(":", 1)[1]))
        s.close()
        print("closed without data")
        return 0
    s.sendall(f"GET / HTTP/1.1\r\nHost: {a.host}\r\nUser-Agent: pinwatch-pyclient\r\nConnection: close\r\n\r\n".encode())
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    print("response:", data.split(b"\r\n", 1)[0].decode(errors="replace"))
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
