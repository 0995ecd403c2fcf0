#!/usr/bin/env python3
"""Tunnel captures for pinwatch: the same real pinning traffic as mitm-explicit-pinning (openssl
and Python clients that trust only the origin CA fail through mitmproxy; curl trusting the proxy CA
succeeds), carried in real tunnels and captured on the UNDERLAY:

  tunnel-vxlan.pcap   Linux kernel VXLAN overlay (`ip link add ... type vxlan`) between the client
                      hosts and the proxy: VNI 42 on UDP 4789, VNI 43 with no dstport (Linux's
                      default 8472), VNI 44 over an IPv6 underlay. tcpdump on the proxy's underlay.
  tunnel-gre.pcap     remote mirroring over GRE by a software switch: Open vSwitch (userspace
                      datapath) mirrors each client's switch port into a GRE tunnel to a sensor
                      host: Ethernet in GRE (0x6558) with checksum + key 42 + sequence number,
                      with checksum + key 43, with no key and nothing else, and over IPv6 (key
                      66). tcpdump on the sensor. (IP in GRE, 0x0800, is not among them: OVS 3.1
                      aborts when a mirror outputs to a packet_type=legacy_l3 port; the unit
                      tests cover it.)
  tunnel-erspan.pcap  the same mirror into ERSPAN: type II (erspan_ver 1, session 7), type III
                      (erspan_ver 2, session 9) and type III over IPv6 (session 10).

Why Open vSwitch for GRE and ERSPAN: the kernel this runs on may lack GRE (`ip link add ... type
gretap` answers "Unknown device type" without CONFIG_NET_IPGRE); OVS's userspace datapath builds
the GRE/ERSPAN headers itself (its own implementation, independent of pinwatch and of Linux), and
mirroring a switch port into GRE/ERSPAN is what a sensor is fed in real deployments. When the kernel
has gretap/erspan this script still uses OVS, so that the captures do not depend on the kernel.

usage: sudo python3 scripts/captures/tunnels.py     (or scripts/make-captures, which calls it)
The three are always made together: they share one mitmproxy CA (certs/mitmproxy-ca-tunnel.pem).
Only traffic inside the network namespaces it creates (pwt-*; addresses 10.77.0.0/16 and, for
the IPv6 underlay, fd77:9::/64 inside them). Writes captures/NAME.pcap + NAME.truth.json, checks
every label with tshark (verify.py) and exits 1 on a mismatch.
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
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))
import pwcap as pc  # noqa: E402
import verify  # noqa: E402

CLIENTS = [11, 12, 13, 17]
NS_PROXY, NS_ORIGIN, NS_SWITCH, NS_SENSOR = "pwt-proxy", "pwt-origin", "pwt-switch", "pwt-sensor"
NAMESPACES = [NS_PROXY, NS_ORIGIN, NS_SWITCH, NS_SENSOR] + [f"pwt-c{n}" for n in CLIENTS]
UNDERLAY4 = "10.77.9"        # 10.77.9.1 proxy / switch, .N client N, .100 sensor
UNDERLAY6 = "fd77:9::"
CA_NAMES = {"ca_name": "mitmproxy-ca-tunnel.pem", "origin_name": "origin-ca-tunnel.pem"}

# capture -> (how each client's traffic is carried, for the truth file and the README)
TUNNELS = {
    "tunnel-vxlan": {
        11: {"type": "vxlan", "id": 42, "underlay": "ipv4", "note": "kernel VXLAN, VNI 42, dstport 4789"},
        12: {"type": "vxlan", "id": 43, "underlay": "ipv4", "note": "kernel VXLAN, VNI 43, no dstport given: Linux's default UDP 8472"},
        13: {"type": "vxlan", "id": 44, "underlay": "ipv6", "note": "kernel VXLAN, VNI 44, dstport 4789, IPv6 underlay"},
        17: {"type": "vxlan", "id": 42, "underlay": "ipv4", "note": "kernel VXLAN, VNI 42 (shared with 10.77.1.11), dstport 4789"},
    },
    "tunnel-gre": {
        11: {"type": "gre", "id": 42, "underlay": "ipv4", "note": "OVS mirror into GRE: Ethernet (0x6558), checksum, key 42, sequence number"},
        12: {"type": "gre", "id": None, "underlay": "ipv4", "note": "OVS mirror into GRE: Ethernet (0x6558), no key, no checksum, no sequence number"},
        13: {"type": "gre", "id": 66, "underlay": "ipv6", "note": "OVS mirror into ip6gre: Ethernet (0x6558), key 66, IPv6 underlay"},
        17: {"type": "gre", "id": 43, "underlay": "ipv4", "note": "OVS mirror into GRE: Ethernet (0x6558), checksum, key 43"},
    },
    "tunnel-erspan": {
        11: {"type": "erspan_ii", "id": 7, "underlay": "ipv4", "note": "OVS mirror into ERSPAN type II (erspan_ver 1), session 7"},
        12: {"type": "erspan_iii", "id": 9, "underlay": "ipv4", "note": "OVS mirror into ERSPAN type III (erspan_ver 2), session 9, hwid 4, egress"},
        13: {"type": "erspan_iii", "id": 10, "underlay": "ipv6", "note": "OVS mirror into ip6erspan type III (erspan_ver 2), session 10, IPv6 underlay"},
        17: {"type": "erspan_ii", "id": 7, "underlay": "ipv4", "note": "same ERSPAN type II session 7 as 10.77.1.11 (one mirror session, two source ports)"},
    },
}
DESCRIPTIONS = {
    "tunnel-vxlan": "The pinning scenario (openssl TLS 1.2/1.3 and Python pinned to the origin CA fail on api/pay.pinnedbank.test from 3 hosts, curl trusting the proxy CA succeeds) inside a Linux VXLAN overlay (VNI 42 on 4789, VNI 43 on 8472, VNI 44 over IPv6), captured on the underlay",
    "tunnel-gre": "The same pinning scenario mirrored by Open vSwitch into GRE (Ethernet payload; checksum+key+sequence, checksum+key, no key, over IPv6), captured on the sensor",
    "tunnel-erspan": "The same pinning scenario mirrored by Open vSwitch into ERSPAN type II and type III (also over IPv6), captured on the sensor",
}

OVS_DIR = None


def log(*a):
    print("[tunnel-captures]", *a, flush=True)


# ------------------------------------------------------------------ teardown

def teardown():
    for p in reversed(pc.PROCS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in pc.PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pc.PROCS.clear()
    for ns in NAMESPACES:
        # only our own processes run in our namespaces
        r = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


# ------------------------------------------------------------------ network

def veth(a, a_ns, b, b_ns):
    pc.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    pc.run(["ip", "link", "set", a, "netns", a_ns])
    pc.run(["ip", "link", "set", b, "netns", b_ns])


def no_offload(ns, dev):
    # Real wire-sized segments with real checksums: no TSO/GSO super-packets in the captures, and
    # OVS's userspace datapath (AF_PACKET) needs complete checksums to forward frames.
    pc.run(["ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"], ns=ns, check=False)


def base_namespaces():
    teardown()
    for ns in NAMESPACES:
        pc.run(["ip", "netns", "add", ns])
        os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
        Path(f"/etc/netns/{ns}/hosts").write_text(pc.hosts_file())
        Path(f"/etc/netns/{ns}/resolv.conf").write_text("nameserver 127.0.0.1\n")
        pc.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.accept_dad=0 "
              "net.ipv6.conf.default.router_solicitations=0 net.ipv6.conf.all.router_solicitations=0; ip link set lo up", ns=ns)
    # proxy <-> origin (the WAN side, as in make-captures)
    veth("pwtwan", NS_PROXY, "pwtwano", NS_ORIGIN)
    pc.sh("ip link set pwtwan name wan0; ip addr add 10.77.2.1/24 dev wan0; ip link set wan0 up; sysctl -qw net.ipv4.ip_forward=1",
          ns=NS_PROXY)
    addrs = sorted({ip for ip, _ in pc.DOMAINS.values()})
    pc.sh("ip link set pwtwano name eth0; " + "".join(f"ip addr add {a}/24 dev eth0; " for a in addrs)
          + "ip link set eth0 up; ip route add default via 10.77.2.1", ns=NS_ORIGIN)


def vxlan_network():
    """Clients reach the proxy's LAN only through VXLAN; the underlay is a bridge in the proxy host."""
    base_namespaces()
    pc.sh(f"ip link add ul0 type bridge; ip addr add {UNDERLAY4}.1/24 dev ul0; ip addr add {UNDERLAY6}1/64 dev ul0 nodad; "
          "ip link set ul0 up; ip link add br0 type bridge; ip addr add 10.77.1.1/24 dev br0; "
          f"ip addr add {pc.PROXY_IP}/24 dev br0; ip link set br0 up", ns=NS_PROXY)
    for n in CLIENTS:
        veth(f"pwtu{n}", f"pwt-c{n}", f"pwtu{n}p", NS_PROXY)
        pc.sh(f"ip link set pwtu{n}p master ul0 up", ns=NS_PROXY)
        t = TUNNELS["tunnel-vxlan"][n]
        if t["underlay"] == "ipv6":
            local, remote = f"{UNDERLAY6}{n}", f"{UNDERLAY6}1"
        else:
            local, remote = f"{UNDERLAY4}.{n}", f"{UNDERLAY4}.1"
        port = "" if t["id"] == 43 else "dstport 4789"
        pc.sh(f"ip link set pwtu{n} name ul0; ip addr add {UNDERLAY4}.{n}/24 dev ul0; ip addr add {UNDERLAY6}{n}/64 dev ul0 nodad; "
              f"ip link set ul0 up; ip link add vx0 type vxlan id {t['id']} local {local} remote {remote} {port} dev ul0; "
              f"ip link set vx0 name eth0; ip addr add 10.77.1.{n}/24 dev eth0; ip link set eth0 up; "
              f"ip route add default via 10.77.1.1", ns=f"pwt-c{n}")
        no_offload(f"pwt-c{n}", "eth0")
        no_offload(f"pwt-c{n}", "ul0")
    # The proxy's end: one VXLAN device per VNI (and port, and address family), all on the LAN bridge.
    pc.sh(f"ip link add vx42 type vxlan id 42 local {UNDERLAY4}.1 dstport 4789 dev ul0; "
          f"bridge fdb append 00:00:00:00:00:00 dev vx42 dst {UNDERLAY4}.11; "
          f"bridge fdb append 00:00:00:00:00:00 dev vx42 dst {UNDERLAY4}.17; "
          f"ip link add vx43 type vxlan id 43 local {UNDERLAY4}.1 remote {UNDERLAY4}.12 dev ul0 2>/dev/null; "
          f"ip link add vx44 type vxlan id 44 local {UNDERLAY6}1 remote {UNDERLAY6}13 dstport 4789 dev ul0; "
          "for d in vx42 vx43 vx44; do ip link set $d master br0 up; done", ns=NS_PROXY)
    for d in ("vx42", "vx43", "vx44", "br0", "ul0"):
        no_offload(NS_PROXY, d)
    time.sleep(1.0)


def ovs(*args, check=True):
    env = dict(os.environ, OVS_RUNDIR=str(OVS_DIR), OVS_LOGDIR=str(OVS_DIR), OVS_DBDIR=str(OVS_DIR), OVS_SYSCONFDIR=str(OVS_DIR))
    r = subprocess.run(["ip", "netns", "exec", NS_SWITCH] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stdout}")
    return r.stdout


def start_ovs():
    """ovsdb-server + ovs-vswitchd (userspace datapath) inside the switch namespace, private dirs."""
    global OVS_DIR
    OVS_DIR = pc.WORK / "ovs"
    shutil.rmtree(OVS_DIR, ignore_errors=True)  # a fresh database for each capture
    OVS_DIR.mkdir()
    schema = "/usr/share/openvswitch/vswitch.ovsschema"
    pc.run(["ovsdb-tool", "create", str(OVS_DIR / "conf.db"), schema])
    env_prefix = ["env", f"OVS_RUNDIR={OVS_DIR}", f"OVS_LOGDIR={OVS_DIR}", f"OVS_DBDIR={OVS_DIR}", f"OVS_SYSCONFDIR={OVS_DIR}"]
    pc.spawn(env_prefix + ["ovsdb-server", str(OVS_DIR / "conf.db"), f"--remote=punix:{OVS_DIR}/db.sock",
                           f"--pidfile={OVS_DIR}/ovsdb-server.pid"], NS_SWITCH, "ovsdb-server",
             ready=lambda: (OVS_DIR / "db.sock").exists())
    ovs("ovs-vsctl", "--no-wait", "init")
    pc.spawn(env_prefix + ["ovs-vswitchd", f"unix:{OVS_DIR}/db.sock", f"--pidfile={OVS_DIR}/ovs-vswitchd.pid"], NS_SWITCH,
             "ovs-vswitchd", ready=lambda: (OVS_DIR / "ovs-vswitchd.pid").exists())


def ovs_network(capture):
    """Clients and proxy on an OVS switch; each client's port mirrored into its tunnel to the sensor."""
    base_namespaces()
    pc.sh(f"iptables -A INPUT -p 47 -j DROP; ip6tables -A INPUT -p 47 -j DROP", ns=NS_SENSOR)  # no ICMP replies to GRE
    start_ovs()
    ovs("ovs-vsctl", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev")
    for n in CLIENTS:
        veth(f"pwte{n}", f"pwt-c{n}", f"pwte{n}s", NS_SWITCH)
        pc.sh(f"ip link set pwte{n} name eth0; ip addr add 10.77.1.{n}/24 dev eth0; ip link set eth0 up; "
              "ip route add default via 10.77.1.1", ns=f"pwt-c{n}")
        no_offload(f"pwt-c{n}", "eth0")
        pc.sh(f"ip link set pwte{n}s up", ns=NS_SWITCH)
        no_offload(NS_SWITCH, f"pwte{n}s")
        ovs("ovs-vsctl", "add-port", "br0", f"pwte{n}s")
    veth("pwtlan", NS_PROXY, "pwtlans", NS_SWITCH)
    pc.sh(f"ip link set pwtlan name lan0; ip addr add 10.77.1.1/24 dev lan0; ip addr add {pc.PROXY_IP}/24 dev lan0; ip link set lan0 up",
          ns=NS_PROXY)
    no_offload(NS_PROXY, "lan0")
    pc.sh("ip link set pwtlans up", ns=NS_SWITCH)
    no_offload(NS_SWITCH, "pwtlans")
    ovs("ovs-vsctl", "add-port", "br0", "pwtlans")
    # Underlay: the switch's own address on br-phy, jumbo frames so mirrored full-size frames fit.
    veth("pwtmon", NS_SWITCH, "pwtmons", NS_SENSOR)
    ovs("ovs-vsctl", "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
        "--", "set", "interface", "br-phy", "mtu_request=9000")
    pc.sh("ip link set pwtmon mtu 9000 up", ns=NS_SWITCH)
    no_offload(NS_SWITCH, "pwtmon")
    ovs("ovs-vsctl", "add-port", "br-phy", "pwtmon", "--", "set", "interface", "pwtmon", "mtu_request=9000")
    pc.sh(f"ip addr add {UNDERLAY4}.1/24 dev br-phy; ip addr add {UNDERLAY6}1/64 dev br-phy nodad; ip link set br-phy up",
          ns=NS_SWITCH)
    pc.sh(f"ip link set pwtmons name eth0; ip link set eth0 mtu 9000; ip addr add {UNDERLAY4}.100/24 dev eth0; "
          f"ip addr add {UNDERLAY6}100/64 dev eth0 nodad; ip link set eth0 up", ns=NS_SENSOR)
    no_offload(NS_SENSOR, "eth0")
    time.sleep(1.0)  # let ovs-vswitchd learn br-phy's routes
    mac = pc.sh("cat /sys/class/net/eth0/address", ns=NS_SENSOR).stdout.strip()
    ovs("ovs-appctl", "tnl/neigh/set", "br-phy", f"{UNDERLAY4}.100", mac)
    ovs("ovs-appctl", "tnl/neigh/set", "br-phy", f"{UNDERLAY6}100", mac)
    # One tunnel port per distinct tunnel, one mirror per tunnel port selecting its clients' ports.
    ports = {}
    for n, t in TUNNELS[capture].items():
        key = (t["type"], t["id"], t["underlay"])
        ports.setdefault(key, []).append(n)
    for i, ((kind, tid, underlay), clients) in enumerate(sorted(ports.items(), key=lambda kv: kv[1])):
        name = f"tun{i}"
        remote = f"{UNDERLAY6}100" if underlay == "ipv6" else f"{UNDERLAY4}.100"
        opts = [f"options:remote_ip={remote}"]
        if kind == "gre":
            otype = "ip6gre" if underlay == "ipv6" else "gre"
            if tid is not None:
                opts.append(f"options:key={tid}")
            if tid == 42:
                opts += ["options:csum=true", "options:seq=true"]
            if tid == 43:
                opts.append("options:csum=true")
        else:
            otype = "ip6erspan" if underlay == "ipv6" else "erspan"
            opts.append(f"options:key={tid}")
            if kind == "erspan_ii":
                opts += ["options:erspan_ver=1", f"options:erspan_idx={tid}"]
            else:
                opts += ["options:erspan_ver=2", "options:erspan_dir=1", "options:erspan_hwid=4"]
        ovs("ovs-vsctl", "add-port", "br0", name, "--", "set", "interface", name, f"type={otype}", *opts)
        sel = ",".join(f"@p{n}" for n in clients)
        ids = []
        for n in clients:
            ids += ["--", f"--id=@p{n}", "get", "port", f"pwte{n}s"]
        ovs("ovs-vsctl", *ids, "--", f"--id=@o", "get", "port", name, "--", "--id=@m", "create", "mirror", f"name=m{i}",
            f"select_src_port=[{sel}]", f"select_dst_port=[{sel}]", "output_port=@o", "--", "add", "bridge", "br0", "mirrors", "@m")
    errors = ovs("ovs-vsctl", "--columns=name,error", "find", "interface", "error!=[]")
    if errors.strip():
        raise RuntimeError(f"OVS interface errors:\n{errors}")
    time.sleep(0.5)


# ------------------------------------------------------------------ processes

def start_origin(certs):
    lst = [{"addr": ip, "port": 443, "kind": "tls", "cert": str(certs / f"{dom.split('.')[0]}.pem"),
            "key": str(certs / f"{dom.split('.')[0]}.key")} for dom, (ip, _) in pc.DOMAINS.items()]
    cfg = pc.WORK / "origin-tunnel.json"
    cfg.write_text(json.dumps({"listeners": lst}))
    logf = pc.WORK / "origin-tunnel.log"
    return pc.spawn([pc.PY, str(HERE / "origin.py"), str(cfg)], NS_ORIGIN, "origin-tunnel",
                    ready=lambda: logf.exists() and "origin ready" in logf.read_text())


def start_mitm(certs):
    conf = pc.WORK / "mitm"
    conf.mkdir(exist_ok=True)
    cmd = [pc.MITMDUMP, "-q", "--set", f"confdir={conf}", "--mode", f"regular@{pc.PROXY_IP}:8080",
           "--set", f"ssl_verify_upstream_trusted_ca={certs / 'origin-ca.pem'}"]
    return pc.spawn(cmd, NS_PROXY, "mitmdump-tunnel", ready=lambda: listening(NS_PROXY, 8080))


def listening(ns, port):
    r = pc.run(["ss", "-Hltn", f"sport = :{port}"], ns=ns, check=False)
    return bool(r.stdout.strip())


class Capture:
    """tcpdump on the underlay: the proxy's underlay bridge (VXLAN) or the sensor (GRE, ERSPAN)."""

    def __init__(self, name, ns, iface, bpf):
        self.name, self.ns, self.iface, self.bpf = name, ns, iface, bpf
        self.path = pc.OUT / f"{name}.pcap"

    def __enter__(self):
        if self.path.exists():
            self.path.unlink()
        err = pc.WORK / f"tcpdump-{self.name}.log"
        self.p = pc.spawn(["tcpdump", "-i", self.iface, "-s", "0", "-U", "-n", "-Z", "root", "-w", str(self.path), self.bpf],
                          self.ns, f"tcpdump-{self.name}", ready=lambda: "listening on" in err.read_text())
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.7)
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=10)
        finally:
            pc.stop(self.p)
        os.chmod(self.path, 0o644)


def run_client(n, cmd, label, stdin=None, timeout=20):
    """pwcap's client runner, in this script's client namespaces."""
    r = subprocess.run(["ip", "netns", "exec", f"pwt-c{n}"] + cmd, input=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout)
    with open(pc.WORK / "clients.log", "a") as f:
        f.write(f"### 10.77.1.{n} {label}\n$ {' '.join(cmd)}\nexit={r.returncode}\n{r.stdout}\n")
    time.sleep(0.25)
    return r


# ------------------------------------------------------------------ scenario

def specs():
    """The core of mitm-explicit-pinning: openssl pinned to the origin CA on api.pinnedbank.test from
    3 hosts (TLS 1.2 and 1.3), Python pinned on pay.pinnedbank.test, and curl trusting the proxy CA
    succeeding on the same name."""
    s = []
    for n in (11, 12, 13):
        s.append(dict(n=n, kind="openssl", host="api.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca",
                      pinning=True, note="trust store = origin CA only; rejects the mitmproxy leaf inside the handshake"))
        s.append(dict(n=n, kind="openssl", host="api.pinnedbank.test", tls="1.3", ca="origin", expect="client_alert", alert="unknown_ca",
                      pinning=True, note=pc.OPENSSL13))
    s.append(dict(n=13, kind="python", host="pay.pinnedbank.test", tls="1.2", ca="origin", expect="client_alert", alert="unknown_ca",
                  pinning=True, note="Python ssl with cafile=origin-ca.pem"))
    for tls in ("1.2", "1.3"):
        s.append(dict(n=17, kind="curl", host="api.pinnedbank.test", tls=tls, ca="mitm", expect="established",
                      note="browser-like client (trusts proxy CA) succeeds on the same name the pinned clients fail on"))
    return s


def scenario(env, name):
    log(f"capture {name}")
    if name == "tunnel-vxlan":
        vxlan_network()
        cap = Capture(name, NS_PROXY, "ul0", "udp port 4789 or udp port 8472")
    else:
        ovs_network(name)
        cap = Capture(name, NS_SENSOR, "eth0", "ip proto 47 or ip6 proto 47")
    procs = [start_origin(env.certs), start_mitm(env.certs)]
    conns = []
    try:
        with cap:
            for s in specs():
                for e in pc.do_conn(env, "explicit", s):
                    t = TUNNELS[name][s["n"]]
                    e["tunnel"] = {"type": t["type"], "id": t["id"], "underlay": t["underlay"]}
                    e["note"] = f"{e['note']}. Carried in: {t['note']}"
                    conns.append(e)
    finally:
        for p in procs:
            pc.stop(p)
    proxy = pc.proxy_obj(env, "explicit")
    pc.write_capture(name, proxy, conns, {"origin_ca": f"certs/{CA_NAMES['origin_name']}",
                                          "tunnels": {f"10.77.1.{n}": t for n, t in TUNNELS[name].items()}})
    return name


def main():
    if os.geteuid() != 0:
        sys.exit("tunnels.py must run as root (network namespaces, tcpdump, Open vSwitch)")
    for tool in ("ovs-vswitchd", "ovsdb-server", "ethtool", "tcpdump", "tshark"):
        if not shutil.which(tool):
            sys.exit(f"tunnels.py needs {tool} (apt-get install openvswitch-switch ethtool tcpdump tshark)")
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    t0 = time.time()
    pc.WORK = Path(tempfile.mkdtemp(prefix="pw-tunnel-captures-"))
    pc.run_client = run_client
    pc.CUR.update(CA_NAMES)
    pc.OUT.mkdir(parents=True, exist_ok=True)
    (pc.OUT / "certs").mkdir(exist_ok=True)
    made = []
    try:
        certs, pin = pc.make_certs()
        # mitmproxy writes its CA on first start; make it once so all three captures share it.
        base_namespaces()
        pc.sh(f"ip addr add {pc.PROXY_IP}/32 dev lo", ns=NS_PROXY)
        start_mitm(certs)
        teardown()
        mitm_ca = pc.WORK / "mitm" / "mitmproxy-ca-cert.pem"
        ver = pc.run([pc.MITMDUMP, "--version"]).stdout.split("\n")[0].split(":")[-1].strip()
        env = pc.Env(certs, pin, mitm_ca, ver)
        pc.build_go()
        for name in ("tunnel-vxlan", "tunnel-gre", "tunnel-erspan"):
            try:
                made.append(scenario(env, name))
            finally:
                teardown()
        made = [m for m in made if m]
        if made:
            shutil.copy(mitm_ca, pc.OUT / "certs" / CA_NAMES["ca_name"])
            shutil.copy(certs / "origin-ca.pem", pc.OUT / "certs" / CA_NAMES["origin_name"])
        import readme  # the table lists every capture present
        readme.write(pc.OUT, {**pc.DESCRIPTIONS, **DESCRIPTIONS})
        ok = True
        for name in made:
            ok &= verify.verify_file(pc.OUT / f"{name}.pcap", pc.OUT / f"{name}.truth.json")
            size = (pc.OUT / f"{name}.pcap").stat().st_size
            if size >= 100 * 1024:
                log(f"{name}.pcap is {size} bytes (over 100 KB)")
                ok = False
        log(f"tunnel captures done in {time.time() - t0:.0f} s")
        if not ok:
            log(f"SOME LABELS DO NOT MATCH THE WIRE (see above); logs kept in {pc.WORK}")
            return 1
        shutil.rmtree(pc.WORK, ignore_errors=True)
        return 0
    except BaseException:
        log(f"failed; logs kept in {pc.WORK}")
        raise
    finally:
        teardown()


if __name__ == "__main__":
    sys.exit(main())
