#!/usr/bin/env python3
"""The generalisation captures (captures/gen-*.pcap), run by scripts/make-captures.

Traffic shaped unlike the first sets (pwcap.py): client software pinned and not, on more
stacks (wget/GnuTLS, gnutls-cli, Java 17, rustls, Node https, Go, curl --http2), one app
with several fingerprints, apps sharing a fingerprint with a browser, partial inline
interception, a span port seeing both legs across a delayed and lossy WAN, a proxy CA
naming no product, shared-platform tenants, a host faking aborts and a host missing the
proxy CA. See captures/README.md (section "Generalisation captures") for the topology.

Ground truth is by construction: each connection's spec says which software runs, whether
that software pins the name, which CA files it trusts and whether its path crosses the
proxy; from that follows whether it must fail. The wire outcome class (which alert, which
close) is then read from the pcap by verify.py's tshark classifier and must agree with the
constructed label (a failure is never `established`, a success always is); any
disagreement fails the run. Each truth file adds per-connection `software`, `pins`, `ja4`
(from tshark) and a `pairs` table: per (name, software) whether it pins, fails through
the proxy, works through the proxy, and so whether a bypass rule is expected.

Namespaces are prefixed `cp-`; addresses 10.78.0.0/16. Removed at the end and on failure.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = Path(os.environ.get("PW_OUT", REPO / "captures"))
CLIENTS_DIR = HERE / "clients"
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))
import pwcap  # noqa: E402  (process, namespace and tcpdump helpers)
import verify  # noqa: E402
from pwcap import listening, remove_namespaces, run, sh, spawn, stop  # noqa: E402

MITMDUMP = os.environ.get("PW_MITMDUMP", shutil.which("mitmdump") or "mitmdump")
PY = sys.executable
RTLS_VENV = Path(os.environ.get("PW_RTLS_VENV", "/opt/pinwatch-rtls"))

NET_A = [11, 12, 13, 14, 15, 16, 17, 18]   # 10.78.1.N (first client network)
NET_B = [31, 32, 33, 34]                   # 10.78.3.N (second client network)
HOSTS = NET_A + NET_B
MITM_IP, SQUID_IP = "10.78.0.1", "10.78.0.2"
NS_LAN, NS_PROXY, NS_WAN, NS_ORIGIN = "cp-lan", "cp-proxy", "cp-wan", "cp-origin"
NAMESPACES = [NS_LAN, NS_PROXY, NS_WAN, NS_ORIGIN] + [f"cp-h{n}" for n in HOSTS]
WAN_DELAY_MS = 40    # each direction between the proxy and the origins in gen-span-wan (80 ms RTT)
LOSS = 0.05          # per-packet drop probability for the lossy client group of gen-span-wan

# origin -> (address, registrable domains, host labels served under each)
ORIGINS = {
    "fleetapp": ("10.78.2.10", ["fleetapp.test"], ["api", "sync", "www"]),
    "duo": ("10.78.2.11", ["duo.test"], ["sync", "www"]),
    "pyshared": ("10.78.2.12", ["pyshared.test"], ["api", "login", "data", "www"]),
    "sibling": ("10.78.2.13", ["sibling.test"], ["api", "pay", "login", "cdn", "www", "static"]),
    "inline": ("10.78.2.14", ["inline.test"], ["app", "bypass", "www"]),
    "span": ("10.78.2.15", ["span.test"], ["api", "push", "www"]),
    "stacks": ("10.78.2.16", ["stacks.test"], ["dl", "gnutls", "java", "rustls", "node", "go", "h2", "www"]),
    "neutral": ("10.78.2.17", ["neutral.test"], ["api", "login", "www"]),
    "popular": ("10.78.2.18", ["popular.test"], ["www", "api"]),
    "cloudplat": ("10.78.2.19", ["cloudplat.test"], [f"t{i}" for i in range(1, 9)]),
    "remote": ("10.78.2.21", ["remote.test"], ["api", "push", "www"]),
    "far": ("10.78.2.22", ["far.test"], ["api", "www"]),
    "mixed": ("10.78.2.20", ["shopk.test", "dailyk.test", "weatherk.test", "mediak.test", "corpk.test", "bankk.test"],
              ["www", "news", "api", "static", "mail"]),
}

WORK = None
ENV = {}


def log(*a):
    print("[make-captures gen]", *a, flush=True)




def ip_of(n):
    return f"10.78.{1 if n in NET_A else 3}.{n}"


def origin_of(name):
    for key, (addr, doms, _) in ORIGINS.items():
        if any(name == d or name.endswith("." + d) for d in doms):
            return key, addr
    raise KeyError(name)


# ------------------------------------------------------------------ network

def teardown():
    for p in reversed(list(pwcap.PROCS)):
        stop(p)
    remove_namespaces(NAMESPACES)


def hosts_file():
    lines = ["127.0.0.1 localhost"]
    for addr, doms, labels in ORIGINS.values():
        lines.append(addr + " " + " ".join(f"{l}.{d}" for d in doms for l in labels) + " " + " ".join(doms))
    return "\n".join(lines) + "\n"


def veth(ns_a, name_a, ns_b, name_b):
    # both ends created inside their namespaces: no interface names in the root namespace
    run(["ip", "link", "add", "name", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b])


def setup_net():
    teardown()
    for ns in NAMESPACES:
        run(["ip", "netns", "add", ns])
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        Path(f"/etc/netns/{ns}/hosts").write_text(hosts_file())
        Path(f"/etc/netns/{ns}/resolv.conf").write_text("nameserver 127.0.0.1\n")
        sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up", ns=ns)
    sh("ip link add br0 type bridge; ip link set br0 up", ns=NS_LAN)
    for n in HOSTS:
        veth(f"cp-h{n}", "eth0", NS_LAN, f"p{n}")
        sh(f"ip link set p{n} master br0 up", ns=NS_LAN)
        gw = "10.78.1.1" if n in NET_A else "10.78.3.1"
        sh(f"ip addr add {ip_of(n)}/24 dev eth0; ip link set eth0 up; ip route add default via {gw}", ns=f"cp-h{n}")
    veth(NS_LAN, "up0", NS_PROXY, "lan0")
    veth(NS_PROXY, "wan0", NS_WAN, "w0")
    veth(NS_WAN, "w1", NS_ORIGIN, "eth0")
    sh("ip link set up0 master br0 up", ns=NS_LAN)
    sh(f"ip addr add 10.78.1.1/24 dev lan0; ip addr add 10.78.3.1/24 dev lan0; ip addr add {MITM_IP}/24 dev lan0; "
       f"ip addr add {SQUID_IP}/24 dev lan0; ip link set lan0 up; "
       "ip addr add 10.78.4.1/24 dev wan0; ip link set wan0 up; ip route add default via 10.78.4.2; "
       "sysctl -qw net.ipv4.ip_forward=1", ns=NS_PROXY)
    # the WAN router: plain forwarding, or through the delaying TUN (delay_on)
    sh("ip addr add 10.78.4.2/24 dev w0; ip link set w0 up; ip addr add 10.78.5.1/24 dev w1; ip link set w1 up; "
       "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0; "
       "ip route add 10.78.2.0/24 via 10.78.5.2; ip route add 10.78.0.0/22 via 10.78.4.1", ns=NS_WAN)
    addrs = sorted({a for a, _, _ in ORIGINS.values()})
    sh("ip addr add 10.78.5.2/24 dev eth0; " + "".join(f"ip addr add {a}/32 dev eth0; " for a in addrs)
       + "ip link set eth0 up; ip route add default via 10.78.5.1", ns=NS_ORIGIN)


def delay_on():
    """Route everything crossing cp-wan through delay.py's TUN (WAN_DELAY_MS each way)."""
    p = spawn([PY, str(HERE / "delay.py"), "dly0", str(WAN_DELAY_MS)], NS_WAN, "delay",
              ready=lambda: "delay ready" in (WORK / "delay.log").read_text())
    sh("ip link set dly0 up; sysctl -qw net.ipv4.conf.dly0.rp_filter=0; "
       "ip route add 10.78.2.0/24 via 10.78.5.2 table 100; ip route add 10.78.0.0/22 via 10.78.4.1 table 100; "
       "ip route add 10.78.4.0/24 dev w0 table 100; ip rule add iif dly0 lookup 100 pref 100; "
       "ip route replace 10.78.2.0/24 dev dly0; ip route replace 10.78.0.0/22 dev dly0; ip route add 10.78.4.1/32 dev dly0",
       ns=NS_WAN)
    return p


def client_delay_on(n, ms):
    """Delay everything host n sends by ms (delay.py's TUN inside its namespace).

    Only the client's direction is delayed, so at the sensor (the proxy) the client's ACK of
    the SYN-ACK, its alerts and closes all arrive ms late: a client far from the sensor.
    """
    ns = f"cp-h{n}"
    gw = "10.78.1.1" if n in NET_A else "10.78.3.1"
    p = spawn([PY, str(HERE / "delay.py"), "dly0", str(ms)], ns, f"delay-h{n}",
              ready=lambda: "delay ready" in (WORK / f"delay-h{n}.log").read_text())
    # written-back packets carry the host's own source address: accept_local lets it forward them
    sh("ip link set dly0 up; sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.dly0.rp_filter=0 "
       f"net.ipv4.conf.dly0.accept_local=1; ip route add default via {gw} dev eth0 table 100; "
       f"ip rule add iif dly0 lookup 100 pref 100; ip route replace default dev dly0 src {ip_of(n)}", ns=ns)
    return p


def client_delay_off(n, p):
    gw = "10.78.1.1" if n in NET_A else "10.78.3.1"
    sh(f"ip route replace default via {gw} dev eth0; ip rule del pref 100 || true", ns=f"cp-h{n}")
    stop(p)


def delay_off(p):
    sh("ip route replace 10.78.2.0/24 via 10.78.5.2; ip route replace 10.78.0.0/22 via 10.78.4.1; "
       "ip route del 10.78.4.1/32 dev dly0 || true; ip rule del pref 100 || true", ns=NS_WAN)
    stop(p)


# ------------------------------------------------------------------ certificates

def make_certs():
    c = WORK / "certs"
    c.mkdir()
    sh(f"""cd {c}
openssl ecparam -name prime256v1 -genkey -noout -out origin-ca.key
openssl req -x509 -new -key origin-ca.key -sha256 -days 3650 -subj '/O=Pinwatch Generalisation Origins/CN=Generalisation Origin CA' \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out origin-ca.pem 2>/dev/null
# the squid CA deliberately names no product (gen-neutral-ca)
openssl req -x509 -newkey rsa:2048 -nodes -keyout neutral-ca.key -out neutral-ca.pem -days 3650 -sha256 \
  -subj '/C=GB/O=Example Holdings Ltd/OU=Group IT/CN=Network Services Root R2' \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
""")
    pins = {}
    for key, (_, doms, labels) in ORIGINS.items():
        sans = ",".join(f"DNS:{d},DNS:*.{d}" for d in doms)
        sh(f"""cd {c}
openssl ecparam -name prime256v1 -genkey -noout -out {key}.key
openssl req -new -key {key}.key -subj '/O=Pinwatch Generalisation Origins/CN={labels[0]}.{doms[0]}' -out {key}.csr 2>/dev/null
printf 'subjectAltName={sans}\\nextendedKeyUsage=serverAuth\\nbasicConstraints=CA:FALSE\\n' > {key}.ext
openssl x509 -req -in {key}.csr -CA origin-ca.pem -CAkey origin-ca.key -CAcreateserial -days 825 -sha256 -extfile {key}.ext -out {key}.pem 2>/dev/null
""")
        pins[key] = sh(f"openssl x509 -in {c}/{key}.pem -pubkey -noout | openssl pkey -pubin -outform der | "
                       "openssl dgst -sha256 -binary | base64").stdout.strip()
    return c, pins


# ------------------------------------------------------------------ processes



def start_origin(certs):
    lst = [{"addr": addr, "port": 443, "kind": "tls", "cert": str(certs / f"{k}.pem"), "key": str(certs / f"{k}.key")}
           for k, (addr, _, _) in ORIGINS.items()]
    cfg = WORK / "origin.json"
    cfg.write_text(json.dumps({"listeners": lst}))
    spawn([PY, str(HERE / "origin.py"), str(cfg)], NS_ORIGIN, "origin",
          ready=lambda: "origin ready" in (WORK / "origin.log").read_text())


def start_mitm(certs, ignore=None):
    conf = WORK / "mitm"
    conf.mkdir(exist_ok=True)
    cmd = [MITMDUMP, "-q", "--set", f"confdir={conf}", "--mode", f"regular@{MITM_IP}:8080", "--mode", "transparent@8081",
           "--set", f"ssl_verify_upstream_trusted_ca={certs / 'origin-ca.pem'}"]
    if ignore:
        cmd += ["--set", f"ignore_hosts={ignore}"]
    return spawn(cmd, NS_PROXY, "mitmdump", ready=lambda: listening(NS_PROXY, 8080)() and listening(NS_PROXY, 8081)())


def start_squid(certs):
    d = WORK / "squid"
    d.mkdir(exist_ok=True)
    sh(f"""rm -rf {d}/ssl_db; /usr/lib/squid/security_file_certgen -c -s {d}/ssl_db -M 4MB >/dev/null
chown -R proxy:proxy {d}; chmod 755 {WORK} {certs}; chmod 644 {certs}/*.pem {certs}/neutral-ca.key""")
    conf = d / "squid.conf"
    conf.write_text(pwcap.squid_conf(d, SQUID_IP, certs / "neutral-ca.pem", certs / "neutral-ca.key", certs / "origin-ca.pem"))
    p = spawn(["squid", "-N", "-f", str(conf)], NS_PROXY, "squid", ready=listening(NS_PROXY, 3128))
    time.sleep(1.0)
    return p


def set_redirect(nets):
    sh("iptables -t nat -F PREROUTING", ns=NS_PROXY)
    for net in nets:
        sh(f"iptables -t nat -A PREROUTING -i lan0 -s {net} -p tcp --dport 443 -j REDIRECT --to-ports 8081", ns=NS_PROXY)


def set_loss(hosts):
    """Random loss on both directions of these client hosts (iptables statistic; no netem here)."""
    sh("iptables -t raw -F PREROUTING; iptables -F OUTPUT", ns=NS_PROXY)
    for n in hosts:
        sh(f"iptables -t raw -A PREROUTING -i lan0 -s {ip_of(n)} -m statistic --mode random --probability {LOSS} -j DROP; "
           f"iptables -A OUTPUT -o lan0 -d {ip_of(n)} -m statistic --mode random --probability {LOSS} -j DROP", ns=NS_PROXY)


# ------------------------------------------------------------------ clients

def cafile(which):
    return str(ENV["certs"] / {"origin": "origin-ca.pem", "proxy": "proxy-ca.pem", "both": "both-ca.pem"}[which])


def client_cmd(s, proxy):
    """(argv, description) for one spec; proxy = 'HOST:PORT' of an explicit proxy or None."""
    kind, name, tls, ca = s["kind"], s["name"], s.get("tls", "any"), s["ca"]
    pin = ENV["pins"][origin_of(name)[0]] if s.get("pin") else None
    alpn = s.get("alpn", "http/1.1")
    cad = {"origin": "origin CA only", "proxy": "proxy CA", "both": "origin + proxy CA"}[ca]
    pind = " + SPKI pin" if pin else ""
    if kind in ("python", "rustls"):
        interp = PY if kind == "python" else str(RTLS_VENV / "bin" / "python3")
        cmd = [interp, str(CLIENTS_DIR / "pyclient.py"), "--host", name, "--cafile", cafile(ca), "--tls", tls, "--alpn", alpn,
               "--module", "ssl" if kind == "python" else "rtls", "--action", s.get("action", "get")]
        if pin:
            cmd += ["--pin", pin]
        if proxy:
            cmd += ["--proxy", proxy]
        lib = "Python ssl (OpenSSL)" if kind == "python" else "Python rtls (rustls)"
        return cmd, f"{lib} trusts {cad}{pind}, tls={tls}, alpn={alpn}" + (f", {s['action']}" if s.get("action") else "")
    if kind == "curl":
        cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "--cacert", cafile(ca)]
        cmd += {"1.2": ["--tlsv1.2", "--tls-max", "1.2"], "1.3": ["--tlsv1.3"], "any": []}[tls]
        cmd += ["--http2"] if alpn.startswith("h2") else ["--http1.1"]
        if pin:
            cmd += ["--pinnedpubkey", f"sha256//{pin}"]
        if proxy:
            cmd += ["-x", f"http://{proxy}"]
        return cmd + [f"https://{name}/"], (f"curl 7.88 (OpenSSL) trusts {cad}{pind}, tls={tls}, "
                                             f"{'--http2' if alpn.startswith('h2') else '--http1.1'}")
    if kind == "openssl":
        c = ["openssl", "s_client", "-verify_return_error", "-CAfile", cafile(ca), "-servername", name, "-connect", f"{name}:443", "-quiet"]
        c += {"1.2": ["-tls1_2"], "1.3": ["-tls1_3"], "any": []}[tls]
        if proxy:
            c += ["-proxy", proxy]
        return (["bash", "-c", f"(printf 'GET / HTTP/1.0\\r\\nHost: {name}\\r\\n\\r\\n'; sleep 1) | " + " ".join(c)],
                f"openssl s_client (OpenSSL 3.0) trusts {cad}, tls={tls}")
    if kind == "go":
        cmd = [ENV["go"], name, cafile(ca), tls, alpn, pin or "-"] + ([proxy] if proxy else [])
        slow = s.get("check_ms")
        if slow:
            cmd = ["env", f"PIN_CHECK_MS={slow}"] + cmd
        return cmd, (f"Go 1.19 crypto/tls trusts {cad}" + (" + VerifyPeerCertificate pin" if pin else "")
                     + (f" taking {slow} ms" if slow else "") + f", tls={tls}, alpn={alpn}")
    if kind == "nodetls":
        cmd = ["node", str(HERE / "tlsclient.js"), name, "443", cafile(ca), tls] + ([proxy] if proxy else [])
        return cmd, f"Node 20 tls.connect trusts {cad}, tls={tls}"
    assert not proxy, f"{kind} runs only without an explicit proxy"
    if kind == "node":
        return (["node", str(CLIENTS_DIR / "nodeclient.js"), name, cafile(ca), tls, pin or "-"],
                f"Node 20 https.get trusts {cad}" + (" + checkServerIdentity SPKI pin" if pin else "") + f", tls={tls}")
    if kind == "java":
        return (["java", "-cp", str(WORK / "java"), "JavaClient", name, cafile(ca), tls],
                f"Java 17 HttpsURLConnection (JSSE) trusts {cad}, tls={tls}")
    if kind == "wget":
        cmd = ["wget", "-q", "-O", "/dev/null", "--tries=1", "--timeout=8", f"--ca-certificate={cafile(ca)}"]
        cmd += {"1.2": ["--secure-protocol=TLSv1_2"], "1.3": ["--secure-protocol=TLSv1_3"], "any": []}[tls]
        return cmd + [f"https://{name}/"], f"wget 1.21 (GnuTLS) trusts {cad}" + (f", --secure-protocol=TLSv1_{tls[-1]}" if tls != "any" else "")
    if kind == "gnutls":
        prio = {"1.2": " --priority NORMAL:-VERS-ALL:+VERS-TLS1.2", "1.3": " --priority NORMAL:-VERS-ALL:+VERS-TLS1.3", "any": ""}[tls]
        return (["bash", "-c", f"(printf 'GET / HTTP/1.0\\r\\nHost: {name}\\r\\n\\r\\n'; sleep 1) | "
                 f"gnutls-cli --x509cafile={cafile(ca)}{prio} -p 443 {name}"], f"gnutls-cli 3.7 trusts {cad}, tls={tls}")
    raise ValueError(kind)


def build_helpers():
    e = dict(os.environ, GOCACHE=str(WORK / "gocache"), GOPATH=str(WORK / "gopath"), GO111MODULE="off", GOFLAGS="")
    ENV["go"] = str(WORK / "goclient")
    run(["go", "build", "-o", ENV["go"], str(CLIENTS_DIR / "goclient.go")], env=e)
    (WORK / "java").mkdir()
    run(["javac", "-d", str(WORK / "java"), str(CLIENTS_DIR / "JavaClient.java")])
    if not (RTLS_VENV / "bin" / "python3").exists():
        log(f"pip install rtls (rustls for Python) into {RTLS_VENV}")
        run([PY, "-m", "venv", str(RTLS_VENV)])
        run([str(RTLS_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "rtls"])


# ------------------------------------------------------------------ scenario running

def through_proxy(s, mode):
    if s.get("direct"):
        return False
    if mode["kind"] != "transparent":
        return True
    net = "10.78.1.0/24" if s["n"] in NET_A else "10.78.3.0/24"
    return net in mode["nets"] and s["name"] not in mode.get("ignored", ())


def warmup(name):
    """One TLS 1.2 browser connection first, so the proxy's certificate is on the wire (TLS 1.3 hides it)."""
    return [browser(34, name, tls="1.2",
                    note="warm-up: a TLS 1.2 browser connection shows the proxy's certificate before the story starts")]


def scenario(name, mode, specs, desc, causes, iface="lan0"):
    only = [x for x in os.environ.get("PW_ONLY", "").split(",") if x]
    if only and name not in only:
        return None
    log(f"capture {name} ({len(specs)} connections)")
    procs = []
    if mode["proxy"] == "squid":
        procs.append(start_squid(ENV["certs"]))
        shutil.copy(ENV["certs"] / "neutral-ca.pem", ENV["certs"] / "proxy-ca.pem")
    else:
        procs.append(start_mitm(ENV["certs"], ignore=mode.get("ignore")))
        shutil.copy(WORK / "mitm" / "mitmproxy-ca-cert.pem", ENV["certs"] / "proxy-ca.pem")
    (ENV["certs"] / "both-ca.pem").write_text((ENV["certs"] / "origin-ca.pem").read_text() + (ENV["certs"] / "proxy-ca.pem").read_text())
    set_redirect(mode.get("nets", []) if mode["kind"] == "transparent" else [])
    set_loss(mode.get("lossy", []))
    if mode.get("delay"):
        procs.append(delay_on())
    client_delays = [(n, client_delay_on(n, mode["client_delay_ms"])) for n in mode.get("delayed_clients", [])]
    explicit = {"mitm": f"{MITM_IP}:8080", "squid": f"{SQUID_IP}:3128"}[mode["proxy"]] if mode["kind"] == "explicit" else None
    entries = []
    try:
        with pwcap.Capture(name, iface, ns=NS_PROXY, settle=2.0):
            for s in specs:
                thr = through_proxy(s, mode)
                cmd, cdesc = client_cmd(s, explicit if thr else None)
                r = subprocess.run(["ip", "netns", "exec", f"cp-h{s['n']}"] + cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=30)
                with open(WORK / "clients.log", "a") as f:
                    f.write(f"### {ip_of(s['n'])} {s['software']}\n$ {' '.join(cmd)}\nexit={r.returncode}\n{r.stdout}\n")
                # a pinning client fails where the proxy's certificate reaches it; one missing the
                # proxy CA (trusts the origin CA only) fails there too; nothing fails off the proxy path
                fails = thr and (s["ca"] == "origin" or bool(s.get("pin")))
                entries.append({
                    "client_ip": ip_of(s["n"]), "net": "10.78.1.0/24" if s["n"] in NET_A else "10.78.3.0/24",
                    "sni": s["name"], "connect_target": f"{s['name']}:443" if explicit and thr else None,
                    "client": cdesc, "software": s["software"], "pins": bool(s.get("pins")),
                    "tls": None, "count": 1, "expect_outcome": None, "expect_alert": None, "through_proxy": thr,
                    "pinning": bool(s.get("pins")) and fails and not s.get("fake") and not s.get("missing_ca"),
                    "note": s.get("note", ""), "_fails": fails, "_idle": bool(s.get("action")), "_exit": r.returncode,
                    # gnutls-cli exits 1 even after a good exchange (the origin closes without close_notify);
                    # an idle preconnect exits 0 without being a success: the wire decides for both
                    "_exit_counts": not s.get("action") and s["kind"] != "gnutls",
                    **({"missing_ca": True} if s.get("missing_ca") else {}), **({"fake": True} if s.get("fake") else {}),
                })
                time.sleep(s.get("pause", 0.25))
    finally:
        for n, p in client_delays:
            client_delay_off(n, p)
        for p in reversed(procs):
            if p.poll() is None and "delay.py" in " ".join(p.args):
                delay_off(p)
            else:
                stop(p)
        set_loss([])
    return label(name, mode, entries, desc, causes)


def label(name, mode, entries, desc, causes):
    """Fill the wire outcome from verify.py's tshark classifier and check it against the construction."""
    pcap = OUT / f"{name}.pcap"
    allobs, _ = verify.client_observations(pcap)
    alljas = verify.ja4_by_client_order(pcap)
    client = [i for i, o in enumerate(allobs) if o["client_ip"].startswith(("10.78.1.", "10.78.3."))]
    obs, ja4s = [allobs[i] for i in client], [alljas[i] for i in client]
    upstream = {i: (o, alljas[i]) for i, o in enumerate(allobs) if i not in set(client)}
    ok = len(obs) == len(entries)
    if not ok:
        log(f"{name}: {len(obs)} client connections on the wire, {len(entries)} made")
    for i, e in enumerate(entries):
        o = obs[i] if i < len(obs) else {}
        e["expect_outcome"], e["expect_alert"], e["tls"] = o.get("outcome"), o.get("alert"), o.get("tls")
        e["ja4"] = ja4s[i] if i < len(ja4s) else None
        want_ok = not e["_fails"] and not e["_idle"]
        got_ok = o.get("outcome") == "established"
        if o.get("client_ip") != e["client_ip"] or o.get("sni") != e["sni"] or want_ok != got_ok or (e["_exit_counts"] and want_ok != (e["_exit"] == 0)):
            ok = False
            log(f"{name}: MISMATCH #{i} {e['client_ip']} {e['sni']} {e['software']}: constructed "
                f"{'success' if want_ok else 'failure'}, client exit {e['_exit']}, wire {o.get('client_ip')} {o.get('sni')} "
                f"{o.get('outcome')}/{o.get('alert')}")
    pairs = {}
    for e in entries:
        p = pairs.setdefault((e["sni"], e["software"]), {
            "name": e["sni"], "software": e["software"], "pins": e["pins"], "fake": bool(e.get("fake")),
            "missing_ca": bool(e.get("missing_ca")), "connections": 0, "fails_through_proxy": 0, "works_through_proxy": 0,
            "works_outside_proxy": 0, "idle_closes": 0, "client_ips": [], "ja4s": []})
        p["connections"] += 1
        if e["_idle"]:
            p["idle_closes"] += 1
        elif e["expect_outcome"] == "established":
            p["works_through_proxy" if e["through_proxy"] else "works_outside_proxy"] += 1
        elif e["through_proxy"]:
            p["fails_through_proxy"] += 1
        for k, v in (("client_ips", e["client_ip"]), ("ja4s", e["ja4"])):
            if v and v not in p[k]:
                p[k].append(v)
    name_hosts = {}
    for e in entries:
        if e["pinning"]:
            name_hosts.setdefault(e["sni"], set()).add(e["client_ip"])
    for p in pairs.values():
        # a rule is due where the software pins the name, fails through the proxy and never works there,
        # and the name fails from 2+ client hosts (from one host only the poisoning guard holds it: `held`)
        p["held"] = len(name_hosts.get(p["name"], ())) < 2
        p["expect_rule"] = (p["pins"] and not p["fake"] and p["fails_through_proxy"] > 0 and p["works_through_proxy"] == 0
                            and not p["held"])
    for e in entries:
        for k in ("_fails", "_idle", "_exit", "_exit_counts"):
            e.pop(k)
    merged, it = [], iter(entries)
    for i in range(len(allobs)):
        if i not in upstream:
            merged.extend([e for e in [next(it, None)] if e])
            continue
        o, j = upstream[i]
        # the proxy's own connections to the origins (seen only where the capture has both legs)
        merged.append({"client_ip": o["client_ip"], "sni": o.get("sni"), "connect_target": None, "leg": "upstream",
                        "client": f"mitmproxy {ENV['mitm_version']} upstream connection", "software": "proxy upstream leg",
                        "pins": False, "server_ip": o["server"].rsplit(":", 1)[0], "server_port": int(o["server"].rsplit(":", 1)[1]),
                        "tls": o.get("tls"), "count": 1, "expect_outcome": o.get("outcome"), "expect_alert": o.get("alert"),
                        "through_proxy": False, "pinning": False, "ja4": j, "note": "proxy -> origin leg, as classified by verify.py"})
    entries = merged + list(it)
    sfx = ENV["ca_suffix"]
    px = {"mitm": {"software": f"mitmproxy {ENV['mitm_version']}", "ca": f"certs/gen-mitmproxy-ca{sfx}.pem"},
          "squid": {"software": f"squid {ENV['squid_version']} ssl_bump (peek step1, bump)", "ca": f"certs/gen-neutral-ca{sfx}.pem"}}[mode["proxy"]]
    px["mode"] = "explicit" if mode["kind"] == "explicit" else "direct-tls"
    px["addr"] = ({"mitm": MITM_IP, "squid": SQUID_IP}[mode["proxy"]]) if mode["kind"] == "explicit" else None
    px["port"] = ({"mitm": 8080, "squid": 3128}[mode["proxy"]]) if mode["kind"] == "explicit" else 443
    if mode["kind"] == "transparent":
        px["intercepted_client_nets"] = mode["nets"]
        px["ignored_names"] = sorted(mode.get("ignored", ()))
    if mode.get("delay"):
        px["wan_delay_ms_each_way"] = WAN_DELAY_MS
    if mode.get("delayed_clients"):
        px["delayed_clients"] = {"hosts": [ip_of(n) for n in mode["delayed_clients"]], "delay_ms_client_to_sensor": mode["client_delay_ms"]}
    if mode.get("lossy"):
        px["lossy_clients"] = {"hosts": [ip_of(n) for n in mode["lossy"]], "drop_probability": LOSS}
    truth = {"capture": f"{name}.pcap", "made_by": "scripts/make-captures (scripts/captures/generalise.py)", "description": desc,
             "causes": causes, "proxy": px, "origin_ca": f"certs/gen-origin-ca{sfx}.pem", "connections": entries,
             "pairs": sorted(pairs.values(), key=lambda p: (p["name"], p["software"]))}
    (OUT / f"{name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return name if ok else "!" + name


# ------------------------------------------------------------------ the captures

A_NETS = ["10.78.1.0/24", "10.78.3.0/24"]
EXPLICIT = {"kind": "explicit", "proxy": "mitm"}
TRANSPARENT = {"kind": "transparent", "proxy": "mitm", "nets": A_NETS}
BROWSER = "browser-like curl (trusts the proxy CA, not pinned)"


def browser(n, name, **kw):
    return dict(dict(n=n, kind="curl", name=name, ca="both", alpn="h2", software=BROWSER, note="not pinned: succeeds through the proxy"), **kw)


def multi_ja4():
    sw = "FleetSync agent (Python ssl, trusts only the origin CA)"
    s = warmup("www.fleetapp.test")
    for n, tls, alpn in ((11, "1.2", "http/1.1"), (12, "1.3", "http/1.1"), (13, "any", "h2,http/1.1"), (14, "1.2", "h2,http/1.1"),
                         (15, "1.3", "h2")):
        for _ in range(2):
            s.append(dict(n=n, kind="python", name="api.fleetapp.test", ca="origin", tls=tls, alpn=alpn, pins=True, software=sw,
                          note="one app, its TLS maximum and ALPN configured per host: one JA4 per host"))
    sw2 = "FleetSync updater (curl --pinnedpubkey, trusts the proxy CA)"
    for n, tls, alpn in ((16, "any", "h2"), (17, "any", "http/1.1"), (11, "1.2", "http/1.1")):
        s.append(dict(n=n, kind="curl", name="sync.fleetapp.test", ca="both", pin=True, tls=tls, alpn=alpn, pins=True, software=sw2,
                      note="curl pins the origin key; HTTP/2 on one host, HTTP/1.1 on another, TLS 1.2 maximum on a third"))
    s += [browser(18, "api.fleetapp.test"), browser(18, "www.fleetapp.test"), browser(12, "www.fleetapp.test")]
    return s


def two_apps():
    s = warmup("www.duo.test")
    for tls in ("any", "any"):
        s.append(dict(n=11, kind="go", name="sync.duo.test", ca="both", pin=True, tls=tls, pins=True,
                      software="DuoNotes (Go crypto/tls, VerifyPeerCertificate pin)", note="one pinned app, only on host .11"))
        s.append(dict(n=12, kind="nodetls", name="sync.duo.test", ca="origin", pins=True,
                      software="DuoChat (Node tls, trusts only the origin CA)", note="another pinned app, only on host .12"))
    s += [browser(13, "sync.duo.test"), browser(14, "sync.duo.test"), browser(13, "www.duo.test")]
    return s


def shared_ja4():
    s = warmup("www.pyshared.test")
    for n in (11, 12):
        for _ in range(2):
            s.append(dict(n=n, kind="python", name="api.pyshared.test", ca="origin", pins=True,
                          software="MediSync (Python ssl, trusts only the origin CA)",
                          note="pinned app; the same ClientHello as the unpinned Python client on other hosts"))
    for n in (13, 14, 15):
        s.append(dict(n=n, kind="python", name="api.pyshared.test", ca="both", software="Python ssl client trusting the proxy CA (not pinned)",
                      note="same library and options as MediSync, same JA4, succeeds through the proxy"))
    for n in (16, 17):
        s.append(dict(n=n, kind="curl", name="login.pyshared.test", ca="both", pin=True, alpn="h2", pins=True,
                      software="login script (curl --pinnedpubkey)", note="pinned curl; the same ClientHello as the browser-like curl"))
    for n in (18, 31):
        s.append(browser(n, "login.pyshared.test"))
    for n in (11, 13):
        s.append(dict(n=n, kind="go", name="data.pyshared.test", ca="both", pin=True, pins=True,
                      software="DataPump (Go, VerifyPeerCertificate pin)", note="pinned Go app, same JA4 as the unpinned Go client"))
    for n in (14, 32):
        s.append(dict(n=n, kind="go", name="data.pyshared.test", ca="both", software="Go net client trusting the proxy CA (not pinned)",
                      note="same Go build and options as DataPump, succeeds"))
    return s


def siblings():
    sw = "SiblingBank app (Python ssl, trusts only the origin CA)"
    s = warmup("www.sibling.test")
    for n in (11, 12, 13):
        for h in ("api", "pay", "login"):
            s.append(dict(n=n, kind="python", name=f"{h}.sibling.test", ca="origin", pins=True, software=sw, note="pinned app"))
    s.append(dict(n=14, kind="python", name="cdn.sibling.test", ca="origin", pins=True, software=sw, note="pinned app, one host only"))
    for n in (14, 15, 16):
        s += [browser(n, "www.sibling.test", tls="1.2" if n == 14 else "any"), browser(n, "static.sibling.test")]
    s.append(browser(15, "pay.sibling.test"))
    return s


def inline_partial():
    sw = "InlineApp (Python ssl, trusts only the origin CA)"
    s = []
    for n in (11, 12, 13, 31, 32, 33):
        for tls in ("1.3", "1.2"):
            s.append(dict(n=n, kind="python", name="app.inline.test", ca="origin", tls=tls, pins=True, software=sw,
                          note="net 10.78.1.0/24 is intercepted (fails), 10.78.3.0/24 is not (origin certificate, succeeds); "
                               "same origin address either way"))
    for n in (11, 12):
        s.append(dict(n=n, kind="python", name="bypass.inline.test", ca="origin", tls="1.3", pins=True, software=sw,
                      note="name in the proxy's ignore_hosts: passed through untouched from the intercepted network, succeeds"))
    for n in (16, 17):
        s.append(dict(n=n, kind="go", name="app.inline.test", ca="origin", tls="1.3", pins=True,
                      software="InlineSync (Go, trusts only the origin CA)", note="TLS 1.3 through the transparent proxy: certificate encrypted"))
    s += [browser(14, "www.inline.test"), browser(34, "www.inline.test"), browser(15, "app.inline.test"), browser(33, "app.inline.test")]
    return s


def span_wan():
    sw = "SpanApp (Python ssl, trusts only the origin CA)"
    s = []
    for n in (11, 12, 16, 17):
        for tls in ("1.2", "1.3"):
            s.append(dict(n=n, kind="python", name="api.span.test", ca="origin", tls=tls, pins=True, software=sw, note="pinned app"))
    for n in (13, 16):
        s.append(dict(n=n, kind="nodetls", name="push.span.test", ca="origin", tls="1.2", pins=True,
                      software="SpanPush (Node tls, trusts only the origin CA)", note="pinned app, closes silently after the handshake"))
    for n in (14, 15, 17):
        s += [browser(n, "www.span.test"), browser(n, "api.span.test")]
    s.append(dict(n=15, kind="python", name="www.span.test", ca="both", action="idle:1.5", software="browser preconnect (Python ssl, trusts the proxy CA)",
                  note="preconnect: handshake, 1.5 s idle, close without data; not pinning"))
    return s


STACKS = [  # (kind, pinned name, how it pins, pin flag, tls per pinned host)
    ("wget", "dl", "trusts only the origin CA", False, ("any", "1.2", "any")),
    ("gnutls", "gnutls", "trusts only the origin CA", False, ("1.2", "1.3", "any")),
    ("java", "java", "trusts only the origin CA", False, ("1.2", "1.3", "any")),
    ("rustls", "rustls", "trusts only the origin CA", False, ("any", "1.2", "any")),
    ("node", "node", "https checkServerIdentity SPKI pin", True, ("any", "any", "1.2")),
    ("go", "go", "VerifyPeerCertificate SPKI pin", True, ("any", "1.2", "any")),
    ("curl", "h2", "curl --http2 --pinnedpubkey", True, ("any", "any", "any")),
]
STACK_NAMES = {"wget": "wget (GnuTLS)", "gnutls": "gnutls-cli", "java": "Java 17 JSSE", "rustls": "Python rtls (rustls)",
               "node": "Node https", "go": "Go crypto/tls", "curl": "curl --http2"}


def stacks():
    s = []
    for i, (kind, label_, how, pin, tlss) in enumerate(STACKS):
        hosts = [HOSTS[(i + k) % len(NET_A)] for k in range(3)]
        alpn = "h2" if kind == "curl" else "http/1.1"
        for n, tls in zip(hosts, tlss):
            s.append(dict(n=n, kind=kind, name=f"{label_}.stacks.test", ca="both" if pin else "origin", pin=pin, tls=tls, alpn=alpn,
                          pins=True, software=f"{STACK_NAMES[kind]} app ({how})", note="pinned"))
        s.append(dict(n=HOSTS[(i + 3) % len(NET_A)], kind=kind, name="www.stacks.test", ca="both", alpn=alpn,
                      software=f"{STACK_NAMES[kind]} trusting the proxy CA (not pinned)", note="same stack unpinned, succeeds"))
        s.append(dict(n=31, kind="curl", name=f"{label_}.stacks.test", ca="both", alpn="http/1.1", tls="1.2",
                      software="browser-like curl --http1.1 --tls-max 1.2 (trusts the proxy CA)",
                      note="other software succeeds on the pinned name (TLS 1.2: the proxy's certificate is visible)"))
    return s


def neutral_ca():
    # browsers through squid to other registrable domains first: a CA with no product name is
    # recognisable by breadth (leaves for many unrelated domains, none with an SCT)
    s = [browser(34, n, tls="1.2", note="browser through squid to another domain (breadth of the CA)")
         for n in ("www.fleetapp.test", "www.duo.test", "www.sibling.test", "www.popular.test")]
    for n in (11, 12, 13):
        s.append(dict(n=n, kind="openssl", name="api.neutral.test", ca="origin", tls="1.2", pins=True,
                      software="VaultClient (openssl s_client, trusts only the origin CA)", note="pinned"))
    for n in (14, 15):
        s.append(dict(n=n, kind="curl", name="login.neutral.test", ca="both", pin=True, tls="1.3", alpn="http/1.1", pins=True,
                      software="SSO helper (curl --pinnedpubkey --http1.1)", note="pinned"))
    for n in (16, 17):
        s += [browser(n, "www.neutral.test"), browser(n, "api.neutral.test")]
    return s


def tenants():
    s = warmup("t8.cloudplat.test")
    for n in (11, 12, 13):
        s.append(dict(n=n, kind="python", name="t3.cloudplat.test", ca="origin", pins=True,
                      software="tenant-3 agent (Python ssl, trusts only the origin CA)", note="the one tenant app that pins"))
    for n in (14, 15, 16):
        s.append(dict(n=n, kind="go", name="t5.cloudplat.test", ca="both", pin=True, pins=True,
                      software="tenant-5 sync (Go, VerifyPeerCertificate pin)", note="a second tenant with its own pinned app"))
    for i, n in zip((1, 2, 4, 6, 7, 8, 3, 5), (14, 15, 16, 17, 18, 11, 17, 18)):
        s.append(browser(n, f"t{i}.cloudplat.test"))
    for i, n in ((1, 12), (6, 13), (8, 31)):
        s.append(browser(n, f"t{i}.cloudplat.test"))
    return s


def faker():
    s = warmup("www.popular.test")
    fake = dict(n=18, kind="openssl", name="www.popular.test", ca="origin", tls="1.2", pins=True, fake=True, pause=0.05,
                software="faking host (openssl s_client sending unknown_ca on purpose)",
                note="one host fakes pinning aborts again and again, right after real clients ask for the same name")
    for k in range(16):
        if k % 2 == 0:
            s.append(dict(browser(11 + (k // 2) % 4, "www.popular.test"), pause=0.05))
        s.append(dict(fake))
    for k in range(6):
        s.append(dict(browser(17, "api.popular.test"), pause=0.05))
        s.append(dict(n=15 + k % 2, kind="python", name="api.popular.test", ca="origin", pins=True, pause=0.05,
                      software="PopularApp (Python ssl, trusts only the origin CA)",
                      note="a real pinned app retrying, each try right after a browser asked for the same name"))
    return s


def remote_clients():
    s = warmup("www.remote.test")
    sw = "RemoteApp (Python ssl, trusts only the origin CA)"
    for n in (31, 32, 33):
        for tls in ("1.2", "1.3"):
            s.append(dict(n=n, kind="python", name="api.remote.test", ca="origin", tls=tls, pins=True, software=sw,
                          note=f"pinned; this host is {REMOTE_MS} ms from the sensor, so its abort arrives that late"))
    for n in (31, 33):
        s.append(dict(n=n, kind="nodetls", name="push.remote.test", ca="origin", tls="1.2", pins=True,
                      software="RemotePush (Node tls, trusts only the origin CA)", note="pinned, silent close after the handshake, far away"))
    return s + far_and_near_browsers("remote.test")


def far_and_near_browsers(domain):
    """Browsers on www and api from far hosts .31/.32 and near host .34, and a 1 s idle
    preconnect from far .32 and near .34: the same close, seen later from the far host."""
    s = []
    for n in (31, 32, 34):
        s.append(browser(n, f"www.{domain}"))
        s.append(browser(n, f"api.{domain}"))
    for n in (32, 34):
        s.append(dict(n=n, kind="python", name=f"www.{domain}", ca="both", action="idle:1.0",
                      software="browser preconnect (Python ssl, trusts the proxy CA)",
                      note="preconnect: idle 1.0 s then close without data; not pinning (from a far host the close comes 1.0 s + the delay late)"))
    return s


REMOTE_MS = 250  # client -> sensor delay of the far hosts in gen-remote-clients
FAR_MS = 700  # client -> sensor delay of the far hosts in gen-far-clients


def far_clients():
    """Far hosts whose pinned app is slow to decide: its abort reaches the sensor after the
    delay plus the check, beyond a second, although the app itself took half of one."""
    s = warmup("www.far.test")
    sw = "FarApp (Go VerifyPeerCertificate pin that takes 0.5 s)"
    for n in (31, 32, 33):
        s.append(dict(n=n, kind="go", name="api.far.test", ca="both", tls="any", alpn="h2,http/1.1", pin=True, pins=True,
                      check_ms=500, software=sw,
                      note=f"pinned; {FAR_MS} ms from the sensor and 0.5 s to check its pin, so its abort arrives about 1.2 s after the server's flight"))
    return s + far_and_near_browsers("far.test")


def missing_ca():
    names = ["www.shopk.test", "news.dailyk.test", "api.weatherk.test", "static.mediak.test", "mail.corpk.test", "www.bankk.test"]
    s = []
    for nm in names:
        s.append(dict(n=17, kind="curl", name=nm, ca="origin", alpn="h2", missing_ca=True,
                      software="browser-like curl on a host without the proxy CA", note="host .17 lacks the proxy CA: fails on every name"))
    for nm in names[:3]:
        s.append(dict(n=17, kind="python", name=nm, ca="origin", missing_ca=True,
                      software="Python ssl on a host without the proxy CA", note="host .17 lacks the proxy CA"))
    for i, nm in enumerate(names):
        s.append(browser(11 + i % 4, nm, tls="1.2" if i % 2 else "any"))
    for n in (11, 12, 13):
        s.append(dict(n=n, kind="go", name="api.bankk.test", ca="both", pin=True, pins=True,
                      software="BankK app (Go, VerifyPeerCertificate pin)", note="a genuine pinned app beside the missing-CA host"))
    s.append(dict(n=17, kind="go", name="api.bankk.test", ca="origin", pins=True, missing_ca=True, pin=True,
                  software="BankK app (Go, VerifyPeerCertificate pin)", note="the pinned app on the missing-CA host fails too"))
    return s


def build():
    m = []
    m.append(scenario("gen-multi-ja4", EXPLICIT, multi_ja4(), DESCRIPTIONS["gen-multi-ja4"], ["1"]))
    m.append(scenario("gen-two-apps", EXPLICIT, two_apps(), DESCRIPTIONS["gen-two-apps"], ["1"]))
    m.append(scenario("gen-shared-ja4", EXPLICIT, shared_ja4(), DESCRIPTIONS["gen-shared-ja4"], ["2"]))
    m.append(scenario("gen-siblings", TRANSPARENT, siblings(), DESCRIPTIONS["gen-siblings"], ["3"]))
    m.append(scenario("gen-inline-partial", dict(TRANSPARENT, nets=["10.78.1.0/24"], ignore=r"^bypass\.inline\.test",
                                                 ignored=["bypass.inline.test"]),
                      inline_partial(), DESCRIPTIONS["gen-inline-partial"], ["4"]))
    m.append(scenario("gen-span-wan", dict(TRANSPARENT, delay=True, lossy=[16, 17]), span_wan(), DESCRIPTIONS["gen-span-wan"],
                      ["4", "5", "timing"], iface="any"))
    m.append(scenario("gen-stacks", TRANSPARENT, stacks(), DESCRIPTIONS["gen-stacks"], ["stacks"]))
    m.append(scenario("gen-neutral-ca", {"kind": "explicit", "proxy": "squid"}, neutral_ca(), DESCRIPTIONS["gen-neutral-ca"], ["6"]))
    m.append(scenario("gen-tenants", EXPLICIT, tenants(), DESCRIPTIONS["gen-tenants"], ["3"]))
    m.append(scenario("gen-faker", EXPLICIT, faker(), DESCRIPTIONS["gen-faker"], ["5", "poisoning"]))
    m.append(scenario("gen-remote-clients", dict(EXPLICIT, delayed_clients=[31, 32, 33], client_delay_ms=REMOTE_MS), remote_clients(),
                      DESCRIPTIONS["gen-remote-clients"], ["timing"]))
    m.append(scenario("gen-far-clients", dict(EXPLICIT, delayed_clients=[31, 32, 33], client_delay_ms=FAR_MS), far_clients(),
                      DESCRIPTIONS["gen-far-clients"], ["timing"]))
    m.append(scenario("gen-missing-ca", TRANSPARENT, missing_ca(), DESCRIPTIONS["gen-missing-ca"], ["missing_ca"]))
    return [x for x in m if x]


DESCRIPTIONS = {
    "gen-multi-ja4": "Cause 1: one pinned Python app with a different TLS maximum / ALPN on each of 5 hosts (5 JA4s, one host each) on api.fleetapp.test; a pinned curl with h2, http/1.1 and a TLS 1.2 maximum on 3 hosts; browser-like curl succeeds",
    "gen-two-apps": "Cause 1: two different pinned apps (Go VerifyPeerCertificate on .11, Node tls on .12) each on one host for sync.duo.test; browsers succeed on it",
    "gen-shared-ja4": "Cause 2: pinned and unpinned software with one JA4 on one name from different hosts (Python ssl, curl --pinnedpubkey vs curl, Go pin vs Go)",
    "gen-siblings": "Cause 3: sibling names of sibling.test: api/pay/login pinned from 3 hosts, cdn from 1; browsers succeed on www, static and pay (transparent)",
    "gen-inline-partial": "Cause 4: transparent proxy intercepting only 10.78.1.0/24 and passing bypass.inline.test through; the pinned app fails from the intercepted net and succeeds (origin certificate) from 10.78.3.0/24, same origin address, TLS 1.2 and 1.3",
    "gen-span-wan": "Causes 4-5 and timing: tcpdump -i any (both legs) at a transparent proxy with 40 ms each way to the origins (user-space delay) and 5% loss for hosts .16/.17; pinned Python and Node, browsers, an idle preconnect",
    "gen-stacks": "New client stacks, pinned on their own name from 3 hosts and unpinned on www: wget (GnuTLS), gnutls-cli, Java 17, rustls (rtls), Node https checkServerIdentity, Go VerifyPeerCertificate, curl --http2 (transparent)",
    "gen-neutral-ca": "Squid ssl_bump whose CA names no product (CN=Network Services Root R2, O=Example Holdings Ltd): pinned openssl and curl, browsers succeed",
    "gen-tenants": "Shared-platform tenants t1..t8.cloudplat.test: t3 and t5 pinned by two different apps, browsers succeed on the other tenants",
    "gen-faker": "Cause 5 / poisoning: host .18 fakes unknown_ca aborts 16 times on www.popular.test right after browsers; a real pinned app retries on api.popular.test right after browser requests",
    "gen-remote-clients": "Timing: hosts .31-.33 send through a 250 ms delay (a sensor far from its clients: aborts and closes arrive late); pinned Python and Node, browsers, 1 s idle preconnects from a far and a near host",
    "gen-far-clients": f"Timing: hosts .31-.33 send through a {FAR_MS} ms delay and their pinned Go app takes 0.5 s to reject the proxy's certificate (aborts arrive ~1.2 s after the server's flight); browsers succeed; 1 s idle preconnects from a far and a near host",
    "gen-missing-ca": "Host .17 lacks the proxy CA and fails on 6 registrable domains (curl, Python, even the pinned app); a Go app pins api.bankk.test from 3 hosts (transparent)",
}


def main():
    global WORK
    if os.geteuid() != 0:
        sys.exit("generalise.py must run as root")
    if sys.argv[1:] == ["--cleanup"]:
        teardown()
        return 0
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    t0 = time.time()
    WORK = pwcap.WORK = Path(tempfile.mkdtemp(prefix="cp-captures-"))
    (OUT / "certs").mkdir(parents=True, exist_ok=True)
    try:
        setup_net()
        certs, pins = make_certs()
        # every run makes new CAs: a run of only some gen captures writes its CA files under the
        # first capture's name, so the other captures keep the CA files they were made with
        only = [x for x in os.environ.get("PW_ONLY", "").split(",") if x.startswith("gen-")]
        ENV.update(certs=certs, pins=pins, ca_suffix="" if not only or set(DESCRIPTIONS) <= set(only) else "-" + only[0][4:])
        ENV["mitm_version"] = run([MITMDUMP, "--version"]).stdout.split("\n")[0].split(":")[-1].strip()
        ENV["squid_version"] = run(["squid", "-v"]).stdout.split("\n")[0].split("Version")[-1].strip()
        build_helpers()
        start_origin(certs)
        made = build()
        sfx = ENV["ca_suffix"]
        shutil.copy(certs / "origin-ca.pem", OUT / "certs" / f"gen-origin-ca{sfx}.pem")
        shutil.copy(certs / "neutral-ca.pem", OUT / "certs" / f"gen-neutral-ca{sfx}.pem")
        if (WORK / "mitm" / "mitmproxy-ca-cert.pem").exists():
            shutil.copy(WORK / "mitm" / "mitmproxy-ca-cert.pem", OUT / "certs" / f"gen-mitmproxy-ca{sfx}.pem")
        import readme
        from tunnels import DESCRIPTIONS as TUNNEL_DESCRIPTIONS
        readme.write(OUT, {**pwcap.DESCRIPTIONS, **TUNNEL_DESCRIPTIONS, **DESCRIPTIONS})
        bad = [m[1:] for m in made if m.startswith("!")]
        log(f"{len(made)} captures in {time.time() - t0:.0f} s")
        if bad:
            log(f"LABELS DO NOT MATCH THE WIRE in {', '.join(bad)}; logs kept in {WORK}")
            return 1
        shutil.rmtree(WORK, ignore_errors=True)
        return 0
    except BaseException:
        log(f"failed; logs kept in {WORK}")
        raise
    finally:
        teardown()


if __name__ == "__main__":
    sys.exit(main())
