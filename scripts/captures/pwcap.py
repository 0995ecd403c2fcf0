#!/usr/bin/env python3
"""Orchestrator behind scripts/make-captures (see that script and captures/README.md).

Builds network namespaces, an origin CA and origin HTTPS servers, runs mitmproxy
(explicit + transparent modes), captures real client traffic with tcpdump on the
client-facing interface of the proxy namespace, writes NAME.pcap + NAME.truth.json
and verifies every label against the pcap with tshark (captures/verify.py logic in
verify.py beside this file).
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
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))
import verify  # noqa: E402

MITMDUMP = os.environ.get("PW_MITMDUMP", shutil.which("mitmdump") or "mitmdump")
PY = sys.executable
QUIET = os.environ.get("PW_VERBOSE") != "1"

CLIENTS = list(range(11, 19))            # client hosts 10.77.1.11 .. 10.77.1.18, one netns each
PROXY_IP = "10.77.0.1"                   # explicit proxy address
GW_IP = "10.77.1.1"                      # proxy's address on the client LAN (default gateway)
NAMESPACES = ["pw-lan", "pw-proxy", "pw-origin"] + [f"pw-c{n}" for n in CLIENTS]

# registrable domain -> (origin address, host labels)
DOMAINS = {
    "pinnedbank.test": ("10.77.2.10", ["api", "cdn", "pay", "login", "www"]),
    "shop.test": ("10.77.2.11", ["www", "img", "checkout"]),
    "daily.test": ("10.77.2.12", ["news", "www"]),
    "weather.test": ("10.77.2.13", ["api", "tiles"]),
    "media.test": ("10.77.2.14", ["static", "video"]),
    "acme-app.test": ("10.77.2.15", ["telemetry", "api"]),
    "example-corp.test": ("10.77.2.16", ["mail", "intranet"]),
}
EXTRA_HOSTS = {"down.shop.test": "10.77.2.20", "mtls.acme-app.test": "10.77.2.21", "sink.example-corp.test": "10.77.2.22",
               # origins with a broken certificate of their own (origin-cert-error.pcap)
               "expired.daily.test": "10.77.2.23", "wrongname.daily.test": "10.77.2.24"}
# nx.nowhere.test is deliberately in no hosts file (unresolvable).

WORK = None
PROCS = []
LOG = None


def log(*a):
    print("[make-captures]", *a, flush=True)


def run(cmd, check=True, ns=None, **kw):
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}")
    return r


def sh(script, ns=None):
    return run(["bash", "-ec", script], ns=ns)


# ------------------------------------------------------------------ network

def teardown():
    for p in reversed(PROCS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    PROCS.clear()
    remove_namespaces(NAMESPACES)
    for n in CLIENTS:
        subprocess.run(["ip", "link", "del", f"pwv{n}a"], stderr=subprocess.DEVNULL)
    for d in ("pwvlan", "pwvwan"):
        subprocess.run(["ip", "link", "del", d], stderr=subprocess.DEVNULL)


def remove_namespaces(names):
    """Delete these network namespaces and their /etc/netns files, killing what still runs there."""
    for ns in names:
        # only our own processes run in our namespaces
        r = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def hosts_file():
    lines = ["127.0.0.1 localhost"]
    for dom, (ip, labels) in DOMAINS.items():
        lines.append(ip + " " + " ".join(f"{l}.{dom}" for l in labels) + " " + dom)
    for name, ip in EXTRA_HOSTS.items():
        lines.append(f"{ip} {name}")
    return "\n".join(lines) + "\n"


def setup_net():
    teardown()
    for ns in NAMESPACES:
        run(["ip", "netns", "add", ns])
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        Path(f"/etc/netns/{ns}/hosts").write_text(hosts_file())
        # no DNS inside our namespaces: any lookup not in hosts fails at once
        Path(f"/etc/netns/{ns}/resolv.conf").write_text("nameserver 127.0.0.1\n")
        sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip link set lo up", ns=ns)
    # LAN switch: a bridge in pw-lan, one veth per client host, one uplink to the proxy.
    sh("ip link add br0 type bridge; ip link set br0 up", ns="pw-lan")
    for n in CLIENTS:
        run(["ip", "link", "add", f"pwv{n}a", "type", "veth", "peer", "name", f"pwv{n}b"])
        run(["ip", "link", "set", f"pwv{n}a", "netns", "pw-lan"])
        run(["ip", "link", "set", f"pwv{n}b", "netns", f"pw-c{n}"])
        sh(f"ip link set pwv{n}a master br0 up", ns="pw-lan")
        sh(f"ip link set pwv{n}b name eth0; ip addr add 10.77.1.{n}/24 dev eth0; ip link set eth0 up; "
           f"ip route add default via {GW_IP}", ns=f"pw-c{n}")
    run(["ip", "link", "add", "pwvlan", "type", "veth", "peer", "name", "pwvlanp"])
    run(["ip", "link", "set", "pwvlan", "netns", "pw-lan"])
    run(["ip", "link", "set", "pwvlanp", "netns", "pw-proxy"])
    sh("ip link set pwvlan master br0 up", ns="pw-lan")
    run(["ip", "link", "add", "pwvwan", "type", "veth", "peer", "name", "pwvwano"])
    run(["ip", "link", "set", "pwvwan", "netns", "pw-proxy"])
    run(["ip", "link", "set", "pwvwano", "netns", "pw-origin"])
    sh(f"ip link set pwvlanp name lan0; ip addr add {GW_IP}/24 dev lan0; ip addr add {PROXY_IP}/24 dev lan0; ip link set lan0 up; "
       "ip link set pwvwan name wan0; ip addr add 10.77.2.1/24 dev wan0; ip link set wan0 up; "
       "sysctl -qw net.ipv4.ip_forward=1", ns="pw-proxy")
    addrs = sorted({ip for ip, _ in DOMAINS.values()} | set(EXTRA_HOSTS.values()))
    sh("ip link set pwvwano name eth0; "
       + "".join(f"ip addr add {a}/24 dev eth0; " for a in addrs)
       + "ip link set eth0 up; ip route add default via 10.77.2.1", ns="pw-origin")


# ------------------------------------------------------------------ certs

def make_certs():
    c = WORK / "certs"
    c.mkdir()
    sh(f"""cd {c}
openssl ecparam -name prime256v1 -genkey -noout -out origin-ca.key
openssl req -x509 -new -key origin-ca.key -sha256 -days 3650 -subj '/O=Pinwatch Test Origins/CN=Pinwatch Test Origin CA' \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out origin-ca.pem 2>/dev/null
""")
    for dom, (ip, labels) in list(DOMAINS.items()) + [("mtls", (None, []))]:
        name = dom.split(".")[0]
        if dom == "mtls":
            sans = ["DNS:mtls.acme-app.test"]
            cn = "mtls.acme-app.test"
        else:
            sans = [f"DNS:{dom}", f"DNS:*.{dom}"]
            cn = f"{labels[0]}.{dom}"
            if dom == "shop.test":
                sans.append("DNS:down.shop.test")
        sh(f"""cd {c}
openssl ecparam -name prime256v1 -genkey -noout -out {name}.key
openssl req -new -key {name}.key -subj '/O=Pinwatch Test Origins/CN={cn}' -out {name}.csr 2>/dev/null
printf 'subjectAltName={",".join(sans)}\\nextendedKeyUsage=serverAuth\\nbasicConstraints=CA:FALSE\\n' > {name}.ext
openssl x509 -req -in {name}.csr -CA origin-ca.pem -CAkey origin-ca.key -CAcreateserial -days 825 -sha256 -extfile {name}.ext -out {name}.pem 2>/dev/null
""")
    # Broken origin leaves (origin-cert-error.pcap), both issued by the origin CA:
    #   expired.pem   CN/SAN expired.daily.test, valid 2020-01-01 .. 2021-01-01 (expired)
    #   wrongname.pem CN/SAN www.elsewhere.test, served for wrongname.daily.test (name mismatch)
    sh(f"""cd {c}
mkdir -p cadb; : > cadb/index.txt; echo 1000 > cadb/serial
cat > cadb/ca.cnf <<'CNF'
[ca]
default_ca = d
[d]
database = cadb/index.txt
new_certs_dir = cadb
serial = cadb/serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = none
[p]
organizationName = optional
commonName = supplied
CNF
openssl ecparam -name prime256v1 -genkey -noout -out expired.key
openssl req -new -key expired.key -subj '/O=Pinwatch Test Origins/CN=expired.daily.test' -out expired.csr 2>/dev/null
printf 'subjectAltName=DNS:expired.daily.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > expired.ext
openssl ca -batch -notext -config cadb/ca.cnf -cert origin-ca.pem -keyfile origin-ca.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20210101000000Z -extfile expired.ext 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out wrongname.key
openssl req -new -key wrongname.key -subj '/O=Pinwatch Test Origins/CN=www.elsewhere.test' -out wrongname.csr 2>/dev/null
printf 'subjectAltName=DNS:www.elsewhere.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > wrongname.ext
openssl x509 -req -in wrongname.csr -CA origin-ca.pem -CAkey origin-ca.key -CAcreateserial -days 825 -sha256 -extfile wrongname.ext -out wrongname.pem 2>/dev/null
openssl verify -CAfile origin-ca.pem wrongname.pem >/dev/null
! openssl verify -CAfile origin-ca.pem expired.pem >/dev/null 2>&1
""")
    pin = sh(f"openssl x509 -in {c}/pinnedbank.pem -pubkey -noout | openssl pkey -pubin -outform der | "
             "openssl dgst -sha256 -binary | base64").stdout.strip()
    return c, pin


# ------------------------------------------------------------------ processes

def spawn(cmd, ns, name, ready=None, timeout=30):
    logf = open(WORK / f"{name}.log", "w")
    full = ["ip", "netns", "exec", ns] + cmd if ns else cmd
    p = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    PROCS.append(p)
    if ready:
        t0 = time.time()
        while not ready():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n" + (WORK / f"{name}.log").read_text())
            if time.time() - t0 > timeout:
                raise RuntimeError(f"{name} not ready:\n" + (WORK / f"{name}.log").read_text())
            time.sleep(0.1)
    return p


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def listening(ns, port):
    def f():
        r = run(["ss", "-Hltn", f"sport = :{port}"], ns=ns, check=False)
        return bool(r.stdout.strip())
    return f


def start_origin(certs):
    lst = []
    for dom, (ip, _) in DOMAINS.items():
        n = dom.split(".")[0]
        lst.append({"addr": ip, "port": 443, "kind": "tls", "cert": str(certs / f"{n}.pem"), "key": str(certs / f"{n}.key")})
    lst.append({"addr": DOMAINS["shop.test"][0], "port": 80, "kind": "http"})
    lst.append({"addr": EXTRA_HOSTS["mtls.acme-app.test"], "port": 443, "kind": "tls", "max_tls": "1.2", "cert": str(certs / "mtls.pem"),
                "key": str(certs / "mtls.key"), "client_ca": str(certs / "origin-ca.pem")})
    lst.append({"addr": EXTRA_HOSTS["sink.example-corp.test"], "port": 9000, "kind": "sink"})
    for n in ("expired", "wrongname"):
        lst.append({"addr": EXTRA_HOSTS[f"{n}.daily.test"], "port": 443, "kind": "tls", "cert": str(certs / f"{n}.pem"),
                    "key": str(certs / f"{n}.key")})
    cfg = WORK / "origin.json"
    cfg.write_text(json.dumps({"listeners": lst}))
    spawn([PY, str(HERE / "origin.py"), str(cfg)], "pw-origin", "origin",
          ready=lambda: "origin ready" in (WORK / "origin.log").read_text())


def start_mitm(certs, name="mitmdump", extra=()):
    conf = WORK / "mitm"
    conf.mkdir(exist_ok=True)
    cmd = [MITMDUMP, "-q", "--set", f"confdir={conf}",
           "--mode", f"regular@{PROXY_IP}:8080", "--mode", "transparent@8081",
           "--set", f"ssl_verify_upstream_trusted_ca={certs / 'origin-ca.pem'}", *extra]
    return spawn(cmd, "pw-proxy", name, ready=lambda: listening("pw-proxy", 8080)() and listening("pw-proxy", 8081)())


def set_redirect(on):
    sh("iptables -t nat -F PREROUTING", ns="pw-proxy")
    if on:
        sh("iptables -t nat -A PREROUTING -i lan0 -p tcp --dport 443 -j REDIRECT --to-ports 8081", ns="pw-proxy")


class Capture:
    """tcpdump in namespace `ns` on `iface` into OUT/NAME.pcap for the duration of a with-block."""

    def __init__(self, name, iface="lan0", ns="pw-proxy", settle=0.7):
        # settle: seconds left for the last packets to reach the file before tcpdump stops
        # (on a loaded machine some were still in the kernel's buffer after 0.7 s)
        self.name, self.iface, self.ns, self.settle = name, iface, ns, settle
        self.path = OUT / f"{name}.pcap"

    def __enter__(self):
        if self.path.exists():
            self.path.unlink()
        err = WORK / f"tcpdump-{self.name}.log"
        self.p = spawn(["tcpdump", "-i", self.iface, "-s", "0", "-U", "-n", "-Z", "root", "-w", str(self.path),
                        "tcp or icmp"], self.ns, f"tcpdump-{self.name}",
                       ready=lambda: "listening on" in err.read_text())
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(self.settle)
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=10)
        finally:
            stop(self.p)
        os.chmod(self.path, 0o644)


# ------------------------------------------------------------------ clients

class Env:
    def __init__(self, certs, pin, mitm_ca, mitm_version):
        self.certs, self.pin, self.mitm_ca, self.mitm_version = certs, pin, mitm_ca, mitm_version
        self.origin_ca = certs / "origin-ca.pem"


def run_client(n, cmd, label, stdin=None, timeout=20):
    r = subprocess.run(["ip", "netns", "exec", f"pw-c{n}"] + cmd, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    with open(WORK / "clients.log", "a") as f:
        f.write(f"### 10.77.1.{n} {label}\n$ {' '.join(cmd)}\nexit={r.returncode}\n{r.stdout}\n")
    time.sleep(0.25)
    return r


CUR = {"proxy": f"{PROXY_IP}:8080", "ca": None, "ca_name": "mitmproxy-ca.pem", "origin_name": "origin-ca.pem"}

# Captures added after the first set. Their CA certificates are written under new names
# (certs/mitmproxy-ca-2.pem, certs/origin-ca-2.pem) so that regenerating only these
# (PW_ONLY=...) never overwrites the CA files the first set's pcaps were made with.
SET2 = ("mitm-multihost", "mitm-flaky", "origin-cert-error")
SET2_CA = {"ca_name": "mitmproxy-ca-2.pem", "origin_name": "origin-ca-2.pem"}
SET1_CA = {"ca_name": "mitmproxy-ca.pem", "origin_name": "origin-ca.pem"}


def ca_path(env, which):
    return str(env.origin_ca if which == "origin" else (CUR["ca"] or env.mitm_ca))


def ca_name(which):
    return CUR["origin_name"] if which == "origin" else CUR["ca_name"]


def conn_openssl(env, n, host, tls, ca, proxy, send=True, verify_hostname=False):
    """openssl s_client -verify_return_error -CAfile CA; sends one GET when the handshake succeeds."""
    cmd = ["openssl", "s_client", "-verify_return_error", "-CAfile", ca_path(env, ca), "-servername", host,
           "-connect", f"{host}:443", "-quiet" if send else "-brief"]
    if verify_hostname:
        cmd[2:2] = ["-verify_hostname", host]
    if tls:
        cmd.append("-tls1_2" if tls == "1.2" else "-tls1_3")
    if proxy:
        cmd += ["-proxy", CUR["proxy"]]
    # keep stdin open a moment so a successful session really sends its request and reads the reply
    shcmd = ["bash", "-c", f"(printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep 1) | " + " ".join(cmd)]
    run_client(n, shcmd, "openssl")
    return "openssl s_client -verify_return_error " + (f"-verify_hostname {host} " if verify_hostname else "") + "-CAfile " + ca_name(ca) + (
        f" -tls1_{'2' if tls == '1.2' else '3'}" if tls else "")


def conn_python(env, n, host, tls, ca, proxy, action="get"):
    cmd = [PY, str(HERE / "tlsclient.py"), "--host", host, "--cafile", ca_path(env, ca), "--tls", tls or "any", "--action", action]
    if proxy:
        cmd += ["--proxy", CUR["proxy"]]
    run_client(n, cmd, "python")
    return f"python3 ssl cafile={ca_name(ca)} tls={tls or 'any'} action={action}"


def conn_node(env, n, host, tls, ca, proxy):
    cmd = ["node", str(HERE / "tlsclient.js"), host, "443", ca_path(env, ca), tls or "any"]
    if proxy:
        cmd.append(CUR["proxy"])
    run_client(n, cmd, "node")
    return f"node tls.connect ca={ca_name(ca)} tls={tls or 'any'}"


def conn_curl(env, n, host, tls, ca, proxy, pin=False, url=None, wrap=None):
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n", "--max-time", "10", "--cacert", ca_path(env, ca)]
    if tls == "1.2":
        cmd += ["--tlsv1.2", "--tls-max", "1.2"]
    elif tls == "1.3":
        cmd += ["--tlsv1.3"]
    if pin:
        cmd += ["--pinnedpubkey", f"sha256//{env.pin}"]
    if proxy:
        cmd += ["-x", f"http://{CUR['proxy']}"]
    cmd.append(url or f"https://{host}/")
    run_client(n, list(wrap or []) + cmd, "curl")
    d = f"curl --cacert {ca_name(ca)}"
    if pin:
        d += " --pinnedpubkey sha256//<origin leaf SPKI>"
    if tls:
        d += f" --tlsv{tls}" + (" --tls-max 1.2" if tls == "1.2" else "")
    return d


def conn_junk(env, n, host_ip, port):
    cmd = [PY, "-c", "import socket,sys;s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5);"
           "s.sendall(b'\\x00\\x01JUNK not tls \\xff\\xfe garbage\\r\\n');s.settimeout(3)\n"
           "try: print(s.recv(200))\nexcept OSError as e: print(e)\ns.close()", host_ip, str(port)]
    run_client(n, cmd, "junk")
    return "python3 raw socket sending 27 junk bytes"


def conn_go(env, n, host, tls, ca, proxy):
    cmd = [GO, host, "443", ca_path(env, ca), tls or "any"]
    if proxy:
        cmd.append(CUR["proxy"])
    run_client(n, cmd, "go")
    return f"go crypto/tls RootCAs={ca_name(ca)} tls={tls or 'any'}"


def build_go():
    global GO
    if not shutil.which("go"):
        log("no Go toolchain: skipping the Go client")
        return
    out = WORK / "tlsclient-go"
    e = dict(os.environ, GOCACHE=str(WORK / "gocache"), GOPATH=str(WORK / "gopath"), GO111MODULE="off", GOFLAGS="")
    r = subprocess.run(["go", "build", "-o", str(out), str(HERE / "tlsclient.go")], env=e, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        log("Go client did not build, skipping it:\n" + r.stdout)
        return
    GO = str(out)


CLIENT_FUNCS = {"go": conn_go, "openssl": conn_openssl, "python": conn_python, "node": conn_node, "curl": conn_curl, "junk": conn_junk}


def do_conn(env, proxy_mode, spec):
    """spec: dict(n, kind, host, tls, ca, expect, alert, pinning, note, **extra)."""
    kind = spec["kind"]
    n = spec["n"]
    through = proxy_mode != "none"
    explicit = proxy_mode == "explicit"
    kw = {k: spec[k] for k in ("pin", "url", "action", "send", "verify_hostname", "wrap") if k in spec}
    if spec.get("stall_upstream"):
        # stall the proxy's own upstream TLS handshake: its ClientHello to the origin (> 300 bytes) is
        # dropped on wan0 (never on lan0), so mitmproxy ACKs the client's ClientHello but cannot answer it
        sh(f"iptables -I OUTPUT -o wan0 -p tcp -d {spec['stall_upstream']} --dport 443 -m length --length 300:65535 -j DROP",
           ns="pw-proxy")
    try:
        if kind == "junk":
            desc = conn_junk(env, n, spec["ip"], spec["port"])
        else:
            desc = CLIENT_FUNCS[kind](env, n, spec["host"], spec.get("tls"), spec.get("ca", "mitm"),
                                      explicit and not spec.get("no_proxy"), **kw)
    finally:
        if spec.get("stall_upstream"):
            time.sleep(0.5)
            sh("iptables -F OUTPUT", ns="pw-proxy")
    if spec.get("no_proxy"):
        through = False
    port = spec.get("connect_port", 443)
    entry = {
        "client_ip": f"10.77.1.{n}",
        "sni": spec.get("sni", spec.get("host")),
        "connect_target": spec["connect_target"] if "connect_target" in spec else (
            f"{spec['host']}:{port}" if explicit and through and kind != "junk" else None),
        "client": spec.get("desc", desc),
        "tls": spec.get("tls_seen", spec.get("tls") or "1.3"),
        "count": 1,
        "expect_outcome": spec["expect"],
        "expect_alert": spec.get("alert"),
        "through_proxy": through,
        "pinning": spec.get("pinning", False),
        "note": spec.get("note", ""),
    }
    if spec.get("missing_ca"):
        entry["missing_ca"] = True
    if spec.get("ja4_group"):
        entry["ja4_group"] = spec["ja4_group"]
    if "dst" in spec:
        entry["server_ip"], entry["server_port"] = spec["dst"]
    if "upstream" in spec:
        u = spec["upstream"]
        return [entry, {"client_ip": "10.77.2.1", "sni": spec["host"], "connect_target": None, "client": f"mitmproxy {env.mitm_version} upstream connection",
                        "tls": u.get("tls", "1.3"), "count": 1, "expect_outcome": u["expect"], "expect_alert": u.get("alert"),
                        "through_proxy": False, "pinning": False, "leg": "upstream", "server_ip": DOMAINS[spec["host"].split(".", 1)[1]][0],
                        "server_port": 443, "note": u["note"]}]
    return [entry]


def write_capture(name, proxy, conns, extra=None):
    truth = {"capture": f"{name}.pcap", "made_by": "scripts/make-captures", "proxy": proxy, "connections": conns}
    if extra:
        truth.update(extra)
    (OUT / f"{name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def proxy_obj(env, mode):
    sw = f"mitmproxy {env.mitm_version}"
    if mode == "explicit":
        return {"software": sw, "mode": "explicit", "addr": PROXY_IP, "port": 8080, "ca": f"certs/{CUR['ca_name']}"}
    if mode == "direct-tls":
        return {"software": sw, "mode": "direct-tls", "addr": None, "port": 443, "ca": f"certs/{CUR['ca_name']}",
                "note": "transparent mode: iptables REDIRECT of the clients' tcp/443 to mitmdump; on the wire the proxy answers from each origin's own address"}
    return {"software": None, "mode": "none", "addr": None, "port": None, "ca": None}


def scenario(env, name, mode, specs, iface="lan0", extra=None, proxy_mode_for_truth=None):
    only = os.environ.get("PW_ONLY")
    if only and name not in only.split(","):
        return None
    log(f"capture {name} ({len(specs)} connections)")
    set_redirect(mode == "direct-tls")
    CUR.update(SET2_CA if name in SET2 else SET1_CA)
    try:
        conns = []
        with Capture(name, iface):
            for s in specs:
                conns.extend(do_conn(env, mode, s))
        extra = dict(extra or {})
        if name in SET2:
            extra["origin_ca"] = f"certs/{CUR['origin_name']}"
        groups = sorted({c["ja4_group"] for c in conns if c.get("ja4_group")})
        if groups:
            # the fingerprint every connection of a group must share (verify.py checks it)
            obs = verify.ja4_by_client_order(OUT / f"{name}.pcap")
            exp = [c for c in conns for _ in range(c.get("count", 1))]
            extra["ja4_groups"] = {g: sorted({obs[i] for i, c in enumerate(exp) if c.get("ja4_group") == g and i < len(obs)} - {None})
                                   for g in groups}
        write_capture(name, proxy_obj(env, proxy_mode_for_truth or mode), conns, extra)
    finally:
        CUR.update(SET1_CA)
    return name


# ------------------------------------------------------------------ scenarios

def pinning_specs(mode):
    """Scenarios 1 + 2 (+ the browser-like success on the same name)."""
    s = []
    for n in (11, 12, 13):
        s.append(dict(n=n, kind="openssl", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca",
                      pinning=True, note="trust store = origin CA only; rejects the mitmproxy leaf inside the handshake"))
        s.append(dict(n=n, kind="openssl", host="api.pinnedbank.test", tls="1.3", ca="origin", expect="client_alert", alert="unknown_ca",
                      pinning=True, note=OPENSSL13))
    s.append(dict(n=14, kind="python", host="pay.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca",
                  pinning=True, note="Python ssl with cafile=origin-ca.pem"))
    s.append(dict(n=14, kind="python", host="pay.pinnedbank.test", tls="1.3", ca="origin", expect="client_alert", alert="unknown_ca",
                  pinning=True, note="Python ssl with cafile=origin-ca.pem. " + OPENSSL13))
    s.append(dict(n=15, kind="node", host="cdn.pinnedbank.test", tls="1.2", ca="origin", expect="client_closed_after_handshake", alert=None,
                  pinning=True, note="Node tls.connect({ca: originCA}): Node verifies after the handshake; observed: client Finished, then FIN, no alert, no data"))
    s.append(dict(n=15, kind="node", host="cdn.pinnedbank.test", tls="1.3", ca="origin", expect="client_closed_in_handshake", alert=None,
                  pinning=True, note="Node tls.connect({ca: originCA}) TLS 1.3: observed: FIN right after the server flight, no alert and no client Finished (silent drop)"))
    if GO:
        s.append(dict(n=12, kind="go", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="bad_certificate",
                      pinning=True, note="Go crypto/tls with RootCAs = origin CA; plaintext alert bad_certificate (42), not unknown_ca"))
        s.append(dict(n=12, kind="go", host="api.pinnedbank.test", tls="1.3", ca="origin", expect="client_alert", alert="encrypted",
                      pinning=True, note="Go crypto/tls with RootCAs = origin CA; TLS 1.3: 1-byte CCS then one 19-byte encrypted record (the alert, under handshake keys), FIN"))
    s.append(dict(n=16, kind="curl", host="login.pinnedbank.test", tls="1.2", ca="mitm", pin=True, expect="client_closed_after_handshake",
                  alert=None, pinning=True, note="curl trusts the proxy CA, --pinnedpubkey fails after the handshake; no application data"))
    s.append(dict(n=16, kind="curl", host="login.pinnedbank.test", tls="1.3", ca="mitm", pin=True, expect="client_closed_after_handshake",
                  alert=None, pinning=True, note="curl trusts the proxy CA, --pinnedpubkey fails after the handshake; no application data"))
    s.append(dict(n=17, kind="curl", host="api.pinnedbank.test", tls="1.2", ca="mitm", expect="established",
                  note="browser-like client (trusts proxy CA) succeeds on the same name the pinned clients fail on"))
    s.append(dict(n=17, kind="curl", host="api.pinnedbank.test", tls="1.3", ca="mitm", expect="established",
                  note="browser-like client (trusts proxy CA) succeeds on the same name the pinned clients fail on"))
    return s


OPENSSL13 = ("trust store = origin CA only; TLS 1.3, yet the alert goes out in PLAINTEXT (record type 21, 2 bytes, unknown_ca): "
             "OpenSSL 3.0 rejects the certificate before it switches its write side to handshake keys")
GO = None  # path of the built Go client, when a Go toolchain is available

MISSING_CA_HOSTS = ["www.shop.test", "news.daily.test", "api.weather.test", "static.media.test", "telemetry.acme-app.test", "mail.example-corp.test"]


def missing_ca_specs():
    s = []
    for i, h in enumerate(MISSING_CA_HOSTS):
        tls = "1.2" if i == 0 else None
        s.append(dict(n=18, kind="curl", host=h, tls=tls, tls_seen=tls or "1.3", ca="origin", expect="client_alert",
                      alert="unknown_ca", missing_ca=True,
                      note="client trust store lacks the proxy CA (curl --cacert origin-ca.pem): fails on every name; not pinning"))
    for h in MISSING_CA_HOSTS:
        s.append(dict(n=17, kind="curl", host=h, ca="mitm", tls_seen="1.3", expect="established",
                      note="managed client with the proxy CA installed succeeds on the same names"))
    return s


def build(env):
    made = []
    # 1+2+3 explicit
    made.append(scenario(env, "mitm-explicit-pinning", "explicit", pinning_specs("explicit")))
    # 3 success
    made.append(scenario(env, "mitm-explicit-success", "explicit", [
        dict(n=17, kind="curl", host="www.shop.test", tls="1.2", ca="mitm", expect="established", note="curl trusting the proxy CA"),
        dict(n=17, kind="curl", host="www.shop.test", tls="1.3", ca="mitm", expect="established", note="curl trusting the proxy CA"),
        dict(n=12, kind="python", host="api.weather.test", tls="1.2", ca="mitm", expect="established", note="Python ssl trusting the proxy CA"),
        dict(n=12, kind="python", host="api.weather.test", tls="1.3", ca="mitm", expect="established", note="Python ssl trusting the proxy CA"),
        dict(n=13, kind="node", host="news.daily.test", tls="1.3", ca="mitm", expect="established", note="Node trusting the proxy CA"),
        dict(n=11, kind="openssl", host="static.media.test", tls="1.2", ca="mitm", expect="established", note="openssl s_client trusting the proxy CA, sends a GET"),
    ]))
    # 4 idle close
    made.append(scenario(env, "mitm-explicit-idle", "explicit", [
        dict(n=12, kind="python", host="www.daily.test", tls="1.2", ca="mitm", action="idle:1.8", expect="client_closed_after_handshake",
             note="browser-style preconnect: handshake completes, idles 1.8 s, closes (FIN, no close_notify) without data; NOT pinning (long abort delay)"),
        dict(n=13, kind="python", host="www.daily.test", tls="1.3", ca="mitm", action="idle:1.8", expect="client_closed_after_handshake",
             note="browser-style preconnect: handshake completes, idles 1.8 s, closes without data; NOT pinning (long abort delay). "
                  "The close is an RST, not a FIN: the proxy's unread NewSessionTickets sit in the socket buffer"),
    ]))
    # 5 proxy/server side failures
    made.append(scenario(env, "mitm-explicit-proxyfail", "explicit", [
        dict(n=14, kind="curl", host="down.shop.test", ca="mitm", expect="server_abort", sni=None, tls_seen=None,
             note="origin address up, port 443 closed: mitmproxy answers the CONNECT with 502 Bad Gateway (no TLS at all); curl closes"),
        dict(n=14, kind="curl", host="nx.nowhere.test", ca="mitm", expect="server_abort", sni=None, tls_seen=None,
             note="name not resolvable by the proxy: CONNECT answered 502 Bad Gateway (no TLS)"),
        dict(n=14, kind="curl", host="mtls.acme-app.test", ca="mitm", expect="established", tls_seen="1.3",
             note="origin (TLS 1.2 only) demands a client certificate the proxy does not have: the upstream handshake fails, yet mitmproxy "
                  "completes the client-side TLS handshake and answers the request with HTTP 502 inside the tunnel; on the wire this is an "
                  "established connection (server-side failure visible only inside the encrypted HTTP). Not pinning."),
        dict(n=15, kind="openssl", host="down.shop.test", tls="1.2", ca="mitm", expect="server_abort", sni=None, tls_seen=None,
             note="origin port closed: CONNECT answered 502 Bad Gateway, openssl s_client gives up before TLS"),
    ]))
    # 6 non-TLS
    made.append(scenario(env, "non-tls", "explicit", [
        dict(n=15, kind="curl", host="www.shop.test", url="http://www.shop.test/", ca="mitm", expect="not_tls", sni=None, tls_seen=None,
             connect_target=None, desc="curl -x http://10.77.0.1:8080 http://www.shop.test/", dst=(PROXY_IP, 8080),
             note="plain HTTP request through the explicit proxy (absolute-form GET, no CONNECT)"),
        dict(n=15, kind="junk", ip=EXTRA_HOSTS["sink.example-corp.test"], port=9000, host=None, sni=None, tls_seen=None, expect="not_tls",
             no_proxy=True, dst=(EXTRA_HOSTS["sink.example-corp.test"], 9000),
             note="raw TCP to a non-TLS service (answers one line and closes), routed through the proxy host without interception"),
        dict(n=16, kind="junk", ip=PROXY_IP, port=8080, host=None, sni=None, tls_seen=None, expect="not_tls", dst=(PROXY_IP, 8080),
             note="junk bytes sent to the proxy port: mitmproxy never answers (no complete request line); the client gives up after 3 s and closes"),
    ]))
    # 7 missing CA
    made.append(scenario(env, "missing-ca", "explicit", missing_ca_specs()))
    # direct-tls (transparent) mode
    made.append(scenario(env, "mitm-transparent-pinning", "direct-tls", pinning_specs("direct-tls")))
    made.append(scenario(env, "mitm-transparent-other", "direct-tls", [
        dict(n=17, kind="curl", host="www.shop.test", tls="1.2", ca="mitm", expect="established", note="curl trusting the proxy CA"),
        dict(n=17, kind="curl", host="www.shop.test", tls="1.3", ca="mitm", expect="established", note="curl trusting the proxy CA"),
        dict(n=12, kind="python", host="www.daily.test", tls="1.3", ca="mitm", action="idle:1.8", expect="client_closed_after_handshake",
             note="browser-style preconnect, idles 1.8 s then closes (RST: unread NewSessionTickets); NOT pinning"),
        dict(n=14, kind="curl", host="down.shop.test", ca="mitm", expect="server_abort", tls_seen=None,
             note="origin port closed; the transparent proxy accepted the TCP connection (it answers for the origin address), its upstream "
                  "connect was refused, so it sent FIN before the ClientHello; the ClientHello is answered with RST"),
    ] + [s for s in missing_ca_specs() if s["n"] == 18]))
    # 8 direct / bypassed
    made.append(scenario(env, "direct-bypass", "none", [
        dict(n=11, kind="openssl", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="established",
             note="pinned client straight to the origin (not intercepted): origin certificate on the wire, succeeds"),
        dict(n=11, kind="openssl", host="api.pinnedbank.test", tls="1.3", ca="origin", expect="established",
             note="pinned client straight to the origin (not intercepted): succeeds"),
        dict(n=14, kind="python", host="pay.pinnedbank.test", tls="1.3", ca="origin", expect="established", note="not intercepted, succeeds"),
        dict(n=15, kind="node", host="cdn.pinnedbank.test", tls="1.2", ca="origin", expect="established", note="not intercepted, succeeds"),
        dict(n=16, kind="curl", host="login.pinnedbank.test", tls="1.2", ca="origin", pin=True, expect="established",
             note="curl --pinnedpubkey with the origin key: pin matches, succeeds"),
    ]))
    # 9 both legs
    made.append(scenario(env, "both-legs", "explicit", [
        dict(n=11, kind="openssl", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca", pinning=True,
             note="client leg (on lan0); the proxy's own upstream leg to 10.77.2.10 follows (on wan0)",
             upstream=dict(expect="client_closed_after_handshake", tls="1.3",
                           note="mitmproxy (eager connection strategy) completes its TLS 1.3 handshake with the real origin while the client is "
                                "still handshaking, then closes it without data when the client rejects the proxy certificate")),
        dict(n=17, kind="curl", host="www.shop.test", tls="1.3", ca="mitm", expect="established",
             note="client leg (on lan0); the proxy's own upstream leg to 10.77.2.11 follows (on wan0)",
             upstream=dict(expect="established", tls="1.3", note="proxy -> origin leg of a successful intercepted request")),
    ], iface="any"))
    made.extend(build_set2(env))
    return made


def multihost_specs():
    """Pinned clients, each name from 3 client hosts, TLS 1.2 and 1.3 from every host."""
    s = []
    for n in (11, 12, 13):
        for tls in ("1.2", "1.3"):
            s.append(dict(n=n, kind="python", host="pay.pinnedbank.test", tls=tls, ca="origin", expect="client_alert", alert="unknown_ca",
                          pinning=True, note="Python ssl with cafile=origin CA rejects the mitmproxy leaf inside the handshake"
                          + (" (plaintext alert in TLS 1.3 too)" if tls == "1.3" else "")))
    for n in (13, 14, 15):
        for tls in ("1.2", "1.3"):
            s.append(dict(n=n, kind="node", host="cdn.pinnedbank.test", tls=tls, ca="origin",
                          expect="client_closed_after_handshake" if tls == "1.2" else "client_closed_in_handshake", pinning=True,
                          note="Node tls.connect({ca: originCA}): " + (
                              "client Finished, then FIN, no alert, no data" if tls == "1.2" else
                              "FIN right after the server flight, no alert, no client Finished")))
    for n in (15, 16, 11):
        for tls in ("1.2", "1.3"):
            s.append(dict(n=n, kind="curl", host="login.pinnedbank.test", tls=tls, ca="mitm", pin=True,
                          expect="client_closed_after_handshake", pinning=True,
                          note="curl trusts the proxy CA but pins the origin key (--pinnedpubkey): fails after the handshake, "
                               "close_notify, no application data"))
    for tls in ("1.2", "1.3"):
        s.append(dict(n=17, kind="curl", host="www.shop.test", tls=tls, ca="mitm", expect="established",
                      note="browser-like curl trusting the proxy CA succeeds (not pinned, other registrable domain)"))
    return s


FLAKY_NOTE = "mostly succeeds through the proxy: flaky, not pinning"


def flaky_specs():
    """One curl build and command line (same ClientHello) from 3 hosts: 8 successes, 2 non-pinning failures."""
    base = dict(kind="curl", host="api.weather.test", ca="mitm", tls_seen="1.3", ja4_group="curl-flaky")
    s = []
    order = [12, 13, 14, 12, "kill", 13, 14, 12, "wrongca", 13]
    for x in order:
        if x == "kill":
            s.append(dict(base, n=13, wrap=["timeout", "2"], stall_upstream=DOMAINS["weather.test"][0],
                          expect="client_closed_before_server_hello", tls_seen=None,
                          note=FLAKY_NOTE + ". The same curl command run under `timeout 2`: the proxy's upstream handshake to the origin "
                               "stalls (its ClientHello to 10.77.2.13 is dropped on the WAN side), so the proxy ACKs curl's ClientHello "
                               "but never answers; `timeout` kills curl (SIGTERM) ~2 s later and its FIN arrives before any ServerHello. "
                               "Client killed mid-handshake, not pinning"))
        elif x == "wrongca":
            s.append(dict(base, n=14, ca="origin", expect="client_alert", alert="unknown_ca",
                          note=FLAKY_NOTE + ". One run pointed at the wrong CA file (--cacert origin-ca-2.pem instead of the proxy CA): "
                               "plaintext unknown_ca alert right after the server flight, exactly like a pinning abort on the wire, "
                               "yet the same ClientHello (same JA4) succeeds 8 times through the same proxy"))
        else:
            s.append(dict(base, n=x, expect="established", note=FLAKY_NOTE + ". Success: curl trusting the proxy CA"))
    return s


CERT_ERR_NOTE = "ordinary certificate error behind the origin's own certificate"


def cert_error_specs():
    """Direct (no proxy) to origins with an expired / wrong-name certificate from the origin CA."""
    s = []
    for tls in ("1.2", "1.3"):
        s.append(dict(n=11, kind="openssl", host="expired.daily.test", tls=tls, ca="origin", expect="client_alert", alert="certificate_expired",
                      note=CERT_ERR_NOTE + ": the origin's leaf (origin CA) expired on 2021-01-01; openssl rejects it inside the handshake "
                           "with a plaintext certificate_expired (45) alert. Not intercepted, not pinning"))
    for tls in ("1.2", "1.3"):
        s.append(dict(n=14, kind="openssl", host="wrongname.daily.test", tls=tls, ca="origin", verify_hostname=True, expect="client_alert",
                      alert="bad_certificate",
                      note=CERT_ERR_NOTE + ": the origin serves a leaf for www.elsewhere.test (origin CA) under wrongname.daily.test; "
                           "openssl -verify_hostname rejects it with a plaintext bad_certificate (42) alert. Not intercepted, not pinning"))
    s.append(dict(n=16, kind="python", host="expired.daily.test", tls="1.3", ca="origin", expect="client_alert", alert="certificate_expired",
                  note=CERT_ERR_NOTE + ": Python ssl (cafile=origin CA) rejects the expired origin leaf; plaintext certificate_expired alert"))
    s.append(dict(n=16, kind="python", host="wrongname.daily.test", tls="1.2", ca="origin", expect="client_alert", alert="bad_certificate",
                  note=CERT_ERR_NOTE + ": Python ssl (check_hostname) rejects the wrong-name origin leaf; plaintext bad_certificate alert"))
    return s


def build_set2(env):
    made = []
    made.append(scenario(env, "mitm-multihost", "explicit", multihost_specs()))
    made.append(scenario(env, "mitm-flaky", "explicit", flaky_specs()))
    made.append(scenario(env, "origin-cert-error", "none", cert_error_specs()))
    return made


DESCRIPTIONS = {
    "mitm-explicit-pinning": "Scenarios 1-3 via the explicit proxy (CONNECT): pinned clients (openssl, Python, Node, Go, curl --pinnedpubkey) fail on *.pinnedbank.test from 6 client hosts; a browser-like curl succeeds on the same name",
    "mitm-explicit-success": "Scenario 3: clients that trust the proxy CA succeed (curl, Python, Node, openssl), TLS 1.2 and 1.3",
    "mitm-explicit-idle": "Scenario 4: browser-style preconnect, handshake completes, 1.8 s idle, close without data (not pinning)",
    "mitm-explicit-proxyfail": "Scenario 5: origin port closed / name unresolvable (CONNECT answered 502) and an origin demanding a client certificate (mitmproxy still completes the client handshake, answers 502 inside TLS)",
    "non-tls": "Scenario 6: plain HTTP through the proxy, junk bytes to a TCP service and to the proxy port",
    "missing-ca": "Scenario 7: client 10.77.1.18 lacks the proxy CA and fails on 6 registrable domains; 10.77.1.17 succeeds on the same names",
    "mitm-transparent-pinning": "Scenarios 1-3 in direct-TLS (transparent, iptables REDIRECT) mode: no CONNECT, the proxy answers from the origin addresses",
    "mitm-transparent-other": "Direct-TLS mode: successes, an idle preconnect, a closed origin port (proxy FIN before ClientHello) and the missing-CA client",
    "direct-bypass": "Scenario 8: the pinned clients straight to the origin, not intercepted: origin certificate on the wire, success",
    "both-legs": "Scenario 9: tcpdump -i any in the proxy namespace (Linux SLL2): client legs and mitmproxy's own upstream legs",
    "squid-bump": "Scenario 10: squid ssl_bump (explicit, 10.77.0.2:3128) as a second intercepting proxy: pinning failures and successes",
    "mitm-multihost": "Pinning seen from several hosts: Python (pay), Node (cdn) and curl --pinnedpubkey (login) on three *.pinnedbank.test names, each from 3 client hosts, TLS 1.2 and 1.3; a browser-like curl succeeds on www.shop.test",
    "mitm-flaky": "Flaky, not pinning: one curl build and set of options (one JA4) from 3 hosts to api.weather.test succeeds 8 times and fails twice (killed by `timeout` while the proxy's upstream handshake stalls; one run with the wrong CA file: unknown_ca)",
    "origin-cert-error": "Direct to origins whose own certificate is broken (expired; wrong name), from 3 hosts: openssl and Python reject it with certificate_expired / bad_certificate",
}

SQUID_IP = "10.77.0.2"


def squid_conf(d, addr, ca_pem, ca_key, origin_ca):
    """squid.conf for ssl_bump on addr:3128 (peek at step 1, bump all), state and logs in d."""
    return f"""http_port {addr}:3128 ssl-bump tls-cert={ca_pem} tls-key={ca_key} generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s {d}/ssl_db -M 4MB
sslcrtd_children 3 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={origin_ca}
http_access allow all
cache deny all
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log {d}/access.log
coredump_dir {d}
shutdown_lifetime 1 seconds
dns_nameservers 127.0.0.1
hosts_file /etc/hosts
"""


def start_squid(certs):
    """Squid ssl_bump (Debian squid-openssl) as a second real intercepting proxy, explicit mode on SQUID_IP:3128."""
    d = WORK / "squid"
    d.mkdir()
    sh(f"""cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -sha256 \
  -subj '/O=Pinwatch Test Squid/CN=Pinwatch Test Squid ssl_bump CA' \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null
/usr/lib/squid/security_file_certgen -c -s {d}/ssl_db -M 4MB >/dev/null
chown -R proxy:proxy {d}
chmod 755 {WORK} {WORK / 'certs'}
chmod 644 {WORK / 'certs'}/origin-ca.pem
""")
    sh(f"ip addr add {SQUID_IP}/24 dev lan0 2>/dev/null || true", ns="pw-proxy")
    conf = d / "squid.conf"
    conf.write_text(squid_conf(d, SQUID_IP, d / "ca.pem", d / "ca.key", WORK / "certs" / "origin-ca.pem"))
    ver = run(["squid", "-v"]).stdout.split("\n")[0].split("Version")[-1].strip()
    p = spawn(["squid", "-N", "-f", str(conf)], "pw-proxy", "squid", ready=listening("pw-proxy", 3128))
    time.sleep(1.0)
    return p, d / "ca.pem", ver


def squid_scenarios(env):
    if not shutil.which("squid") or not os.path.exists("/usr/lib/squid/security_file_certgen"):
        log("no squid-openssl: skipping the squid capture")
        return None
    if os.environ.get("PW_ONLY") and "squid-bump" not in os.environ["PW_ONLY"].split(","):
        return None
    p, ca, ver = start_squid(env.certs)
    shutil.copy(ca, OUT / "certs" / "squid-ca.pem")
    CUR.update(proxy=f"{SQUID_IP}:3128", ca=str(ca), ca_name="squid-ca.pem")
    try:
        name = "squid-bump"
        log(f"capture {name}")
        set_redirect(False)
        specs = [
            dict(n=11, kind="openssl", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca", pinning=True,
                 connect_port=443, note="trust store = origin CA only; rejects the squid ssl_bump leaf"),
            dict(n=13, kind="openssl", host="api.pinnedbank.test", tls="1.3", ca="origin", expect="client_alert", alert="unknown_ca", pinning=True,
                 note=OPENSSL13),
            dict(n=16, kind="curl", host="login.pinnedbank.test", tls="1.2", ca="mitm", pin=True, expect="client_closed_after_handshake",
                 pinning=True, note="curl trusts the squid CA, --pinnedpubkey fails after the handshake; no application data"),
            dict(n=17, kind="curl", host="www.shop.test", tls="1.2", ca="mitm", expect="established", note="curl trusting the squid CA"),
            dict(n=17, kind="curl", host="www.shop.test", tls="1.3", ca="mitm", expect="established", note="curl trusting the squid CA"),
        ]
        conns = []
        with Capture(name):
            for s in specs:
                conns.extend(do_conn(env, "explicit", s))
        px = {"software": f"squid {ver} ssl_bump (peek step1, bump)", "mode": "explicit", "addr": SQUID_IP, "port": 3128, "ca": "certs/squid-ca.pem"}
        write_capture(name, px, conns)
        return name
    finally:
        CUR.update(proxy=f"{PROXY_IP}:8080", ca=None, ca_name="mitmproxy-ca.pem")
        stop(p)


# ------------------------------------------------------------------ main

def main():
    global WORK
    if os.geteuid() != 0:
        sys.exit("make-captures must run as root")
    if sys.argv[1:] == ["--cleanup"]:
        teardown()
        return 0
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    t0 = time.time()
    WORK = Path(tempfile.mkdtemp(prefix="pw-captures-"))
    OUT.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("PW_ONLY"):
        for f in list(OUT.glob("*.pcap")) + list(OUT.glob("*.truth.json")):
            f.unlink()
    (OUT / "certs").mkdir(exist_ok=True)
    only = [x for x in os.environ.get("PW_ONLY", "").split(",") if x]
    want_set1 = not only or any(x not in SET2 for x in only)
    want_set2 = not only or any(x in SET2 for x in only)
    try:
        setup_net()
        certs, pin = make_certs()
        start_origin(certs)
        start_mitm(certs)
        mitm_ca = WORK / "mitm" / "mitmproxy-ca-cert.pem"
        ver = run([MITMDUMP, "--version"]).stdout.split("\n")[0].split(":")[-1].strip()
        # the first set's CA files are only rewritten when one of its captures is regenerated
        if want_set1:
            shutil.copy(mitm_ca, OUT / "certs" / "mitmproxy-ca.pem")
            shutil.copy(certs / "origin-ca.pem", OUT / "certs" / "origin-ca.pem")
        if want_set2:
            shutil.copy(mitm_ca, OUT / "certs" / SET2_CA["ca_name"])
            shutil.copy(certs / "origin-ca.pem", OUT / "certs" / SET2_CA["origin_name"])
        env = Env(certs, pin, mitm_ca, ver)
        build_go()
        made = build(env)
        made.append(squid_scenarios(env))
        ok = True
        import readme  # the table lists every capture present, so a partial run keeps it complete
        from tunnels import DESCRIPTIONS as TUNNEL_DESCRIPTIONS  # rows of tunnels.py's captures
        from generalise import DESCRIPTIONS as GEN_DESCRIPTIONS  # rows of generalise.py's captures
        readme.write(OUT, {**DESCRIPTIONS, **TUNNEL_DESCRIPTIONS, **GEN_DESCRIPTIONS})
        for name in [m for m in made if m]:
            ok &= verify.verify_file(OUT / f"{name}.pcap", OUT / f"{name}.truth.json", fix=os.environ.get("PW_FIX") == "1")
        log(f"captures done in {time.time() - t0:.0f} s")
        if not ok:
            log(f"SOME LABELS DO NOT MATCH THE WIRE (see above); logs kept in {WORK}")
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
