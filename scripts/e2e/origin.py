#!/usr/bin/env python3
"""HTTPS origin for scripts/e2e-loop (runs inside the loop's origin namespace).

usage: origin.py ADDR CERT KEY [ADDR CERT KEY ...]

Like scripts/captures/origin.py, but it ends every TLS session with close_notify before
closing TCP. OpenSSL 3's s_client treats a bare TCP close as "unexpected eof while reading"
and exits 1, so without it a pinned client that got the origin's reply would still look failed.
One request per connection, answered with HTTP/1.0 200 "hello from origin HOST path PATH".
"""
import socket
import ssl
import sys
import threading


def serve_one(conn, ctx):
    conn.settimeout(5)
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (OSError, ssl.SSLError):
        conn.close()  # e.g. the client rejected our certificate
        return
    try:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 16384:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        if data:
            lines = data.split(b"\r\n")
            parts = lines[0].split(b" ")
            path = parts[1].decode("latin-1") if len(parts) > 1 else "?"
            host = next((l.split(b":", 1)[1].strip().decode("latin-1") for l in lines[1:]
                         if l.lower().startswith(b"host:")), "?")
            body = f"hello from origin {host} path {path}\n".encode()
            tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        try:
            tls.settimeout(2)
            tls = tls.unwrap()  # close_notify, then wait (briefly) for the client's
        except (OSError, ssl.SSLError):
            pass
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            tls.close()
        except OSError:
            pass


def listen(addr, cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 443))
    s.listen(64)

    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve_one, args=(conn, ctx), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def main():
    a = sys.argv[1:]
    if not a or len(a) % 3:
        sys.exit(__doc__)
    for i in range(0, len(a), 3):
        listen(*a[i:i + 3])
    print("origin ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
