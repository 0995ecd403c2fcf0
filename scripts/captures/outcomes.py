#!/usr/bin/env python3
"""Rebuild the captures/wire-*.pcap files that pin down outcome classes (issue 21).

Usage: sudo scripts/captures/outcomes.py [OUTDIR]   (default: captures/)

Real stacks on the loopback of a network namespace of its own (`oc-outcomes`): Python `ssl` (OpenSSL 3) clients and servers, `openssl s_server`
/ `s_client`; tcpdump on `lo` with a port filter (47100-47199, so other traffic on the
machine stays out). Certificates are made fresh with `openssl req` each run, so the
certificate bytes (not the outcomes) differ between rebuilds.

  wire-early-close      client sends its ClientHello and closes; the server answers 300 ms later
  wire-tls12-data-close TLS 1.2 client writes data, close_notify and FIN in one segment
  wire-client-only      a completed TLS 1.2 exchange, only the client's direction kept
  wire-server-only      the same exchange, only the server's direction kept
  wire-issuer-locality  a private CA whose issuer has L=San Francisco (not Cisco), two names
  wire-internal-pki     an enterprise PKI serving four registrable domains without SCTs
  wire-tls13-padded-pinned   TLS 1.3, records padded to 64-byte blocks (SSL_CTX_set_block_padding)
                        on both sides; the client's pin check fails after the handshake: it
                        sends close_notify and closes (Finished and close_notify both 80 bytes)
  wire-tls13-padded-success  the same padded stacks; the pin matches, a short request (80 bytes,
                        as long as the Finished), the server answers and closes, the client's
                        close_notify comes late
  wire-sct-extension    a private CA without embedded SCTs serving four registrable domains;
                        `openssl s_server -serverinfo` answers `s_client -ct` with an SCT list in
                        the TLS 1.2 ServerHello's signed_certificate_timestamp extension
  wire-sct-ocsp         the same, the SCT list in a stapled OCSP response (`-status_file`, a
                        BasicOCSPResponse signed by the CA with the SCT singleExtension)
  wire-stale-ack-rst     curl reuses the source port of a connection the client forgot (its RST
                        dropped by iptables); the server answers the new SYN with a challenge ACK
                        of the old connection, the client's kernel resets at that stale number
                        (outside the new connection's window), the retransmitted SYN completes
                        and TLS goes on with `openssl s_server`
  wire-tcp-fast-open    TCP Fast Open on the namespace (net.ipv4.tcp_fastopen=3), a Python TLS
                        server with TCP_FASTOPEN, `curl --tcp-fastopen` twice: the first SYN asks
                        for a cookie, the second carries the ClientHello
  wire-sslv2-hello      an SSLv2-format ClientHello offering TLS 1.0 (written by this script: no
                        client here still sends one) to a real `openssl s_server -tls1`, which
                        answers with its TLS 1.0 ServerHello, Certificate and ServerHelloDone; the
                        client then resets (it has no key exchange of its own)

Usage with names (e.g. `outcomes.py captures wire-tls13-padded-pinned`) rebuilds only those,
so the other captures (and their goldens) stay as they are.
"""

from __future__ import annotations

import hashlib
import os
import struct
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "captures")
# Capture names to rebuild (all when none is given).
ONLY = set(sys.argv[2:])
HOST = "127.0.0.1"
NETNS = "oc2-outcomes"


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


class Capture:
    """tcpdump on lo for one port range, written to OUT/name.pcap."""

    def __init__(self, name: str, ports: str = "47100-47199"):
        self.path = OUT / f"{name}.pcap"
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-w", str(self.path),
             f"tcp portrange {ports}"],
            stderr=subprocess.PIPE, text=True,
        )
        # tcpdump says "listening on" once the socket is open; a busy machine takes seconds.
        while "listening on" not in (self.proc.stderr.readline() or "listening on"):
            pass
        time.sleep(0.2)

    def stop(self) -> Path:
        time.sleep(1.0)
        self.proc.terminate()
        self.proc.wait()
        return self.path


def make_ca(d: Path, name: str, subj: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.pem"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "3650", "-subj", subj,
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    return key, crt


def make_leaf(d: Path, ca: tuple[Path, Path], host: str) -> tuple[Path, Path]:
    key, csr, crt = d / f"{host}.key", d / f"{host}.csr", d / f"{host}.pem"
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    ext = d / f"{host}.ext"
    ext.write_text(f"subjectAltName=DNS:{host}\n")
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
       "-CAcreateserial", "-out", str(crt), "-days", "825", "-extfile", str(ext))
    return key, crt


def server_ctx(leaf: tuple[Path, Path], tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(leaf[1]), str(leaf[0]))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_ctx(ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, port))
    s.listen(8)
    return s


def early_close(d: Path, leaf) -> None:
    """The client gives up before the server's hello (a raced connection cancelled)."""
    port = 47101
    srv = listen(port)

    def serve():
        conn, _ = srv.accept()
        time.sleep(0.3)  # a slow server (or bumping proxy) answers after the client left
        try:
            tls = server_ctx(leaf).wrap_socket(conn, server_side=True)
            tls.close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    cap = Capture("wire-early-close")
    ctx = client_ctx()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="early.example")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    c = socket.create_connection((HOST, port))
    c.sendall(outgoing.read())
    time.sleep(0.05)
    c.close()
    t.join()
    srv.close()
    cap.stop()


def tls12_data_close(d: Path, leaf) -> None:
    """Data, close_notify and FIN leave in one segment (TCP_CORK holds them together)."""
    port = 47102
    srv = listen(port)

    def serve():
        conn, _ = srv.accept()
        tls = server_ctx(leaf, tls12=True).wrap_socket(conn, server_side=True)
        try:
            while tls.recv(4096):
                pass
        except (ssl.SSLError, OSError):
            pass
        tls.close()

    t = threading.Thread(target=serve)
    t.start()
    cap = Capture("wire-tls12-data-close")
    c = socket.create_connection((HOST, port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(incoming, outgoing, server_hostname="dataclose.example")
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            c.sendall(outgoing.read())
            incoming.write(c.recv(65536))
    c.sendall(outgoing.read())
    time.sleep(0.05)
    obj.write(b"GET / HTTP/1.0\r\nHost: dataclose.example\r\n\r\n")
    try:
        obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    c.sendall(outgoing.read())
    c.shutdown(socket.SHUT_WR)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    time.sleep(0.2)
    c.close()
    t.join()
    srv.close()
    cap.stop()


def success12(d: Path, leaf, name: str, port: int) -> Path:
    srv = listen(port)

    def serve():
        conn, _ = srv.accept()
        tls = server_ctx(leaf, tls12=True).wrap_socket(conn, server_side=True)
        tls.recv(4096)
        tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        tls.close()

    t = threading.Thread(target=serve)
    t.start()
    cap = Capture(name)
    c = client_ctx().wrap_socket(socket.create_connection((HOST, port)),
                                 server_hostname="oneside.example")
    c.sendall(b"GET / HTTP/1.0\r\nHost: oneside.example\r\n\r\n")
    c.recv(4096)
    c.close()
    t.join()
    srv.close()
    return cap.stop()


def one_sided(d: Path, leaf) -> None:
    """A mirror that carries one direction: filter a real exchange to each side."""
    both = success12(d, leaf, "wire-both-sides-tmp", 47103)
    for side, bpf in (("client", "tcp dst port 47103"), ("server", "tcp src port 47103")):
        sh("tcpdump", "-r", str(both), "-w", str(OUT / f"wire-{side}-only.pcap"), bpf)
    both.unlink()


def serve_names(d: Path, ca, hosts: list[str], name: str, base_port: int) -> None:
    """One openssl s_server per name (TLS 1.2, certificate readable), one s_client each."""
    leaves = [make_leaf(d, ca, h) for h in hosts]
    servers = []
    for i, (h, leaf) in enumerate(zip(hosts, leaves)):
        servers.append(subprocess.Popen(
            ["openssl", "s_server", "-accept", f"{HOST}:{base_port + i}", "-cert", str(leaf[1]),
             "-key", str(leaf[0]), "-tls1_2", "-www", "-quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    cap = Capture(name)
    for i, h in enumerate(hosts):
        subprocess.run(
            ["curl", "-sk", "--tlsv1.2", "--tls-max", "1.2", "--resolve",
             f"{h}:{base_port + i}:{HOST}", f"https://{h}:{base_port + i}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    cap.stop()
    for s in servers:
        s.terminate()
        s.wait()


def block_padding(ctx: ssl.SSLContext, block: int) -> ssl.SSLContext:
    """OpenSSL's SSL_CTX_set_block_padding on a Python context (Python has no API for it):
    the SSL_CTX pointer is the first field after the object header of CPython's context."""
    import ctypes
    libssl = ctypes.CDLL("libssl.so.3")
    libssl.SSL_CTX_set_block_padding.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    ptr = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    if libssl.SSL_CTX_set_block_padding(ptr, block) != 1:
        sys.exit("outcomes.py: SSL_CTX_set_block_padding failed")
    return ctx


def padded_server(leaf, port: int) -> subprocess.Popen:
    """openssl s_server answering one page (-www) with TLS 1.3 records padded to 64 bytes."""
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-cert", str(leaf[1]),
         "-key", str(leaf[0]), "-tls1_3", "-www", "-quiet", "-record_padding", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc


def padded_client(host: str, port: int) -> ssl.SSLSocket:
    ctx = block_padding(client_ctx(), 64)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx.wrap_socket(socket.create_connection((HOST, port)), server_hostname=host)


def padded_pinned(d: Path, leaf) -> None:
    """A pin check after a padded TLS 1.3 handshake fails: close_notify, then close at once
    (as curl --pinnedpubkey does: no waiting for the server's close_notify)."""
    port = 47130
    srv = padded_server(leaf, port)
    cap = Capture("wire-tls13-padded-pinned")
    c = padded_client("pinned.example", port)
    pin = hashlib.sha256(b"the key the app expects").digest()
    if hashlib.sha256(c.getpeercert(binary_form=True)).digest() != pin:
        c.settimeout(0)
        try:
            c.unwrap()  # sends close_notify; the server's is not awaited
        except (ssl.SSLWantReadError, ssl.SSLError, OSError):
            pass
        c.close()
    cap.stop()
    srv.terminate()
    srv.wait()


def padded_success(d: Path, leaf) -> None:
    """The same padded stacks, the pin matches: a short request, the answer, the server closes
    first, and the client's close_notify comes after."""
    port = 47131
    srv = padded_server(leaf, port)
    cap = Capture("wire-tls13-padded-success")
    c = padded_client("padded.example", port)
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    while True:
        try:
            if not c.recv(65536):
                break
        except (ssl.SSLError, OSError):
            break
    time.sleep(0.1)
    try:
        c.unwrap()
    except (ssl.SSLError, OSError):
        pass
    c.close()
    cap.stop()
    srv.terminate()
    srv.wait()


def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def der_oid(dotted: str) -> bytes:
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(chunk))
    return der(0x06, body)


def der_int(v: int) -> bytes:
    return der(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=False))


def der_time(t: float) -> bytes:
    return der(0x18, time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t)).encode())


def sct_list() -> bytes:
    """A SignedCertificateTimestampList (RFC 6962, 3.2) with one v1 SCT: log id, time, an
    ECDSA-SHA256 signature's worth of bytes (nothing here checks it, a passive sensor cannot)."""
    sig = os.urandom(70)
    sct = (bytes([0]) + hashlib.sha256(b"example log key").digest()
           + int(time.time() * 1000).to_bytes(8, "big") + (0).to_bytes(2, "big")
           + bytes([4, 3]) + len(sig).to_bytes(2, "big") + sig)
    serialized = len(sct).to_bytes(2, "big") + sct
    return len(serialized).to_bytes(2, "big") + serialized


def serverinfo_file(d: Path) -> Path:
    """`-serverinfo` input: extension 18 (signed_certificate_timestamp) with an SCT list."""
    import base64
    body = sct_list()
    ext = (18).to_bytes(2, "big") + len(body).to_bytes(2, "big") + body
    path = d / "sct.serverinfo"
    b64 = base64.encodebytes(ext).decode()
    path.write_text(f"-----BEGIN SERVERINFO FOR signed_certificate_timestamp-----\n{b64}"
                    "-----END SERVERINFO FOR signed_certificate_timestamp-----\n")
    return path


def ct_log_list(d: Path) -> Path:
    """`s_client -ct` insists on a CT log list; one made-up log (validation is permissive, so
    the client only asks for SCTs and reads them)."""
    import base64
    key = d / "ctlog.key"
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-out", str(key))
    spki = sh("openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER").stdout
    path = d / "ctlogs.cnf"
    path.write_text("enabled_logs = example\n[example]\ndescription = Example log\n"
                    f"key = {base64.b64encode(spki).decode()}\n")
    return path


def ocsp_with_scts(d: Path, ca, leaf_pem: Path, name: str) -> Path:
    """A DER OCSPResponse (RFC 6960) for the leaf, status good, signed by the CA, whose
    SingleResponse carries the SCT list extension 1.3.6.1.4.1.11129.2.4.5 (RFC 6962, 3.3)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ca_cert = x509.load_pem_x509_certificate(ca[1].read_bytes())
    ca_key = serialization.load_pem_private_key(ca[0].read_bytes(), None)
    leaf = x509.load_pem_x509_certificate(leaf_pem.read_bytes())
    key_bits = ca_cert.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)
    sha1 = lambda b: hashlib.sha1(b).digest()  # noqa: E731 (CertID's hash, RFC 6960)
    cert_id = der(0x30, der(0x30, der_oid("1.3.14.3.2.26") + der(0x05, b""))
                  + der(0x04, sha1(ca_cert.subject.public_bytes())) + der(0x04, sha1(key_bits))
                  + der_int(leaf.serial_number))
    now = time.time()
    sct_ext = der(0x30, der_oid("1.3.6.1.4.1.11129.2.4.5") + der(0x04, der(0x04, sct_list())))
    single = der(0x30, cert_id + der(0x80, b"") + der_time(now - 60)
                 + der(0xA0, der_time(now + 86400)) + der(0xA1, der(0x30, sct_ext)))
    tbs = der(0x30, der(0xA2, der(0x04, sha1(key_bits))) + der_time(now) + der(0x30, single))
    sig = ca_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    basic = der(0x30, tbs + der(0x30, der_oid("1.2.840.10045.4.3.2")) + der(0x03, b"\0" + sig))
    resp = der(0x30, der(0x0A, b"\0") + der(0xA0, der(0x30, der_oid("1.3.6.1.5.5.7.48.1.1")
                                                         + der(0x04, basic))))
    path = d / f"{name}.ocsp.der"
    path.write_bytes(resp)
    return path


def serve_names_s_client(d: Path, ca, hosts: list[str], name: str, base_port: int,
                         server_args, client_args: list[str]) -> None:
    """One `openssl s_server -www` per name (TLS 1.2), `server_args(host, leaf)` adding its
    options, and one `openssl s_client` each asking for the page."""
    leaves = [make_leaf(d, ca, h) for h in hosts]
    servers = []
    for i, (h, leaf) in enumerate(zip(hosts, leaves)):
        servers.append(subprocess.Popen(
            ["openssl", "s_server", "-accept", f"{HOST}:{base_port + i}", "-cert", str(leaf[1]),
             "-key", str(leaf[0]), "-tls1_2", "-www", "-quiet", *server_args(h, leaf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)
    cap = Capture(name)
    for i, h in enumerate(hosts):
        subprocess.run(
            ["openssl", "s_client", "-connect", f"{HOST}:{base_port + i}", "-servername", h,
             "-tls1_2", "-ign_eof", *client_args],
            input=b"GET / HTTP/1.0\r\n\r\n", stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=10)
    cap.stop()
    for s in servers:
        s.terminate()
        s.wait()


def stale_ack_rst(d: Path, leaf) -> None:
    """A RST answering a stale ACK, from real kernels: Linux answers a SYN on a 4-tuple it still
    holds open with a challenge ACK (RFC 5961, 4), and the connecting side resets at that ACK's
    number, which is no sequence number of its new connection."""
    port, client_port = 47160, 47161
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-cert", str(leaf[1]),
         "-key", str(leaf[0]), "-www", "-quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    # An earlier connection from the same port, forgotten by the client without telling the
    # server: its RST (SO_LINGER 0) is dropped on the way out.
    old = socket.socket()
    old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    old.bind((HOST, client_port))
    old.connect((HOST, port))
    time.sleep(0.2)
    rule = ["OUTPUT", "-p", "tcp", "-s", HOST, "--sport", str(client_port),
            "--tcp-flags", "RST,FIN", "RST", "-j", "DROP"]
    sh("iptables", "-A", *rule)
    old.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    old.close()
    time.sleep(0.2)
    sh("iptables", "-D", *rule)
    cap = Capture("wire-stale-ack-rst")
    subprocess.run(
        ["curl", "-sk", "--local-port", str(client_port), "--resolve",
         f"stale.example:{port}:{HOST}", f"https://stale.example:{port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20, check=True)
    cap.stop()
    srv.terminate()
    srv.wait()


def fast_open(d: Path, leaf) -> None:
    """TCP Fast Open (RFC 7413): the second connection's SYN carries curl's ClientHello."""
    port = 47170
    sh("sysctl", "-qw", "net.ipv4.tcp_fastopen=3")  # this namespace only
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 8)
    srv.bind((HOST, port))
    srv.listen(8)

    def serve():
        for _ in range(2):
            conn, _ = srv.accept()
            try:
                tls = server_ctx(leaf).wrap_socket(conn, server_side=True)
                tls.recv(4096)
                tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                tls.close()
            except (ssl.SSLError, OSError):
                conn.close()

    t = threading.Thread(target=serve)
    t.start()
    cap = Capture("wire-tcp-fast-open")
    for _ in range(2):
        subprocess.run(
            ["curl", "-sk", "--tcp-fastopen", "--resolve", f"tfo.example:{port}:{HOST}",
             f"https://tfo.example:{port}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=True)
    t.join()
    srv.close()
    cap.stop()


def sslv2_hello(d: Path) -> None:
    """RFC 5246 E.2: a client that can speak SSL 2.0 sends its hello in SSL 2.0's format while
    offering TLS. OpenSSL 3 servers still answer it."""
    port = 47180
    key, crt = d / "legacy.key", d / "legacy.pem"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
       "-out", str(crt), "-days", "30", "-subj", "/CN=legacy.example")
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{HOST}:{port}", "-cert", str(crt), "-key", str(key),
         "-tls1", "-cipher", "DEFAULT@SECLEVEL=0", "-www", "-quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    cap = Capture("wire-sslv2-hello")
    # Cipher specs: TLS suites as 00 xx yy (AES128-SHA, AES256-SHA, DES-CBC3-SHA, the
    # renegotiation SCSV) and two SSL 2.0 kinds (RC4_128_WITH_MD5, DES_192_EDE3_CBC_WITH_MD5).
    specs = bytes.fromhex("00002f" "000035" "00000a" "010080" "0700c0" "0000ff")
    challenge = os.urandom(32)
    body = (bytes([1, 3, 1]) + len(specs).to_bytes(2, "big") + (0).to_bytes(2, "big")
            + len(challenge).to_bytes(2, "big") + specs + challenge)
    c = socket.create_connection((HOST, port))
    c.sendall((0x8000 | len(body)).to_bytes(2, "big") + body)
    c.settimeout(3)
    got = b""
    while b"\x0e\x00\x00\x00" not in got:  # ServerHelloDone
        try:
            more = c.recv(65536)
        except OSError:
            break
        if not more:
            break
        got += more
    if not got.startswith(b"\x16\x03\x01"):
        sys.exit("outcomes.py: openssl s_server did not answer the SSLv2-format hello with TLS 1.0")
    # Reset rather than FIN: on a FIN the server reports the early end as a decode_error alert,
    # which says nothing about SSLv2 hellos.
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    cap.stop()
    srv.terminate()
    srv.wait()


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("outcomes.py: run as root (tcpdump on lo): sudo scripts/captures/outcomes.py")
    OUT.mkdir(parents=True, exist_ok=True)
    if os.environ.get("OC_IN_NETNS") != "1":
        # A namespace of its own: its loopback carries only this script's traffic.
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        sh("ip", "netns", "add", NETNS)
        try:
            sh("ip", "-n", NETNS, "link", "set", "lo", "up")
            env = dict(os.environ, OC_IN_NETNS="1")
            subprocess.run(["ip", "netns", "exec", NETNS, sys.executable, __file__, str(OUT),
                            *sorted(ONLY)], check=True, env=env)
        finally:
            subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = make_ca(d, "ca", "/CN=Outcome Test CA")
        leaf = make_leaf(d, ca, "outcome.example")

        def want(*names: str) -> bool:
            return not ONLY or bool(ONLY.intersection(names))

        if want("wire-early-close"):
            early_close(d, leaf)
        if want("wire-tls12-data-close"):
            tls12_data_close(d, leaf)
        if want("wire-client-only", "wire-server-only"):
            one_sided(d, leaf)
        if want("wire-issuer-locality"):
            sf = make_ca(d, "sf", "/C=US/ST=California/L=San Francisco/O=Example Widgets Inc/CN=Example Widgets Issuing CA")
            serve_names(d, sf, ["a.widgets-one.test", "b.widgets-two.test"],
                        "wire-issuer-locality", 47110)
        if want("wire-internal-pki"):
            corp = make_ca(d, "corp", "/O=Example Corp/OU=Corporate PKI/CN=Example Corp Internal Issuing CA")
            serve_names(d, corp, ["intranet.corp-one.test", "wiki.corp-two.test",
                                  "hr.corp-three.test", "git.corp-four.test"],
                        "wire-internal-pki", 47120)
            # The internal PKI's CA is what `--not-proxy-ca` is given in the tests.
            (OUT / "certs").mkdir(exist_ok=True)
            (OUT / "certs" / "internal-pki-ca.pem").write_bytes(corp[1].read_bytes())
        logged_hosts = ["www.logged-one.test", "api.logged-two.test", "cdn.logged-three.test",
                        "mail.logged-four.test"]
        if want("wire-sct-extension"):
            ct = make_ca(d, "ct", "/O=Example Public Trust/CN=Example Public Trust TLS CA")
            info = serverinfo_file(d)
            serve_names_s_client(d, ct, logged_hosts, "wire-sct-extension", 47140,
                                 lambda h, leaf: ["-serverinfo", str(info)],
                                 ["-ct", "-ctlogfile", str(ct_log_list(d))])
        if want("wire-sct-ocsp"):
            ct = make_ca(d, "ct2", "/O=Example Public Trust/CN=Example Public Trust OCSP CA")
            serve_names_s_client(
                d, ct, logged_hosts, "wire-sct-ocsp", 47145,
                lambda h, leaf: ["-status_file", str(ocsp_with_scts(d, ct, leaf[1], h))],
                ["-status"])
        if want("wire-stale-ack-rst"):
            stale_ack_rst(d, leaf)
        if want("wire-tcp-fast-open"):
            fast_open(d, leaf)
        if want("wire-sslv2-hello"):
            sslv2_hello(d)
        if want("wire-tls13-padded-pinned"):
            padded_pinned(d, leaf)
        if want("wire-tls13-padded-success"):
            padded_success(d, leaf)
    print("wrote", ", ".join(sorted(p.name for p in OUT.glob("wire-*.pcap"))))


if __name__ == "__main__":
    main()
