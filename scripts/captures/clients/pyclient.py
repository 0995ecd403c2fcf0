#!/usr/bin/env python3
"""Python TLS client for scripts/captures/generalise.py.

Like ../tlsclient.py, plus what the generalisation captures vary: the TLS library
(`--module ssl` is CPython's OpenSSL binding, `--module rtls` the rustls-backed
drop-in from PyPI), the ALPN list, and an optional SPKI pin checked after the
handshake (`--pin` = base64 SHA-256 of the leaf's SubjectPublicKeyInfo; on a
mismatch the client closes without sending data, as pinning SDKs do).
Exit 0 on success, 1 on a TLS or pin failure, 2 when the proxy refuses.
"""
import argparse
import base64
import hashlib
import importlib
import socket
import subprocess
import sys
import time


def spki_sha256(der):
    # the standard library parses no certificates: openssl extracts the key
    pem = subprocess.run(["openssl", "x509", "-inform", "der", "-pubkey", "-noout"], input=der,
                         stdout=subprocess.PIPE, check=True).stdout
    key = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pem,
                         stdout=subprocess.PIPE, check=True).stdout
    return base64.b64encode(hashlib.sha256(key).digest()).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--proxy")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--tls", choices=["1.2", "1.3", "any"], default="any")
    ap.add_argument("--alpn", default="http/1.1")
    ap.add_argument("--module", choices=["ssl", "rtls"], default="ssl")
    ap.add_argument("--pin")
    ap.add_argument("--action", default="get")
    a = ap.parse_args()
    ssl = importlib.import_module(a.module)

    ctx = ssl.create_default_context(cafile=a.cafile)
    if a.tls == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif a.tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if a.alpn:
        ctx.set_alpn_protocols(a.alpn.split(","))
    if a.proxy:
        ph, pp = a.proxy.rsplit(":", 1)
        raw = socket.create_connection((ph, int(pp)), timeout=8)
        raw.sendall(f"CONNECT {a.host}:{a.port} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = raw.recv(4096)
            if not chunk:
                break
            buf += chunk
        if b" 200" not in buf.split(b"\r\n", 1)[0]:
            print("proxy refused:", buf[:60])
            return 2
    else:
        raw = socket.create_connection((a.host, a.port), timeout=8)
    try:
        s = ctx.wrap_socket(raw, server_hostname=a.host)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed:", e)
        raw.close()
        return 1
    print("handshake ok:", s.version())
    if a.pin:
        got = spki_sha256(s.getpeercert(binary_form=True))
        if got != a.pin:
            print("pin mismatch:", got)
            s.close()
            return 1
    if a.action.startswith("idle:"):
        time.sleep(float(a.action[5:]))
        s.close()
        return 0
    s.sendall(f"GET / HTTP/1.1\r\nHost: {a.host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    print("response:", data.split(b"\r\n", 1)[0])
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
