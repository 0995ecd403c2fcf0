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
       sudo python3 scripts/captures/tunnels.py encap   the tunnel-{geneve,gtpu,ipip,mpls,sgt} and proxy-protocol captures
                                                         (see ENCAP_DOC below)
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

def teardown(namespaces=None):
    """Stops every process started here, then removes the namespaces (default: this set's)."""
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
    for ns in NAMESPACES if namespaces is None else namespaces:
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


def ovs(*args, check=True, ns=None):
    env = dict(os.environ, OVS_RUNDIR=str(OVS_DIR), OVS_LOGDIR=str(OVS_DIR), OVS_DBDIR=str(OVS_DIR), OVS_SYSCONFDIR=str(OVS_DIR))
    r = subprocess.run(["ip", "netns", "exec", ns or NS_SWITCH] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stdout}")
    return r.stdout


def start_ovs(ns=None):
    """ovsdb-server + ovs-vswitchd (userspace datapath) inside the switch namespace, private dirs."""
    global OVS_DIR
    ns = ns or NS_SWITCH
    OVS_DIR = pc.WORK / "ovs"
    shutil.rmtree(OVS_DIR, ignore_errors=True)  # a fresh database for each capture
    OVS_DIR.mkdir()
    schema = "/usr/share/openvswitch/vswitch.ovsschema"
    pc.run(["ovsdb-tool", "create", str(OVS_DIR / "conf.db"), schema])
    env_prefix = ["env", f"OVS_RUNDIR={OVS_DIR}", f"OVS_LOGDIR={OVS_DIR}", f"OVS_DBDIR={OVS_DIR}", f"OVS_SYSCONFDIR={OVS_DIR}"]
    pc.spawn(env_prefix + ["ovsdb-server", str(OVS_DIR / "conf.db"), f"--remote=punix:{OVS_DIR}/db.sock",
                           f"--pidfile={OVS_DIR}/ovsdb-server.pid"], ns, "ovsdb-server",
             ready=lambda: (OVS_DIR / "db.sock").exists())
    ovs("ovs-vsctl", "--no-wait", "init", ns=ns)
    pc.spawn(env_prefix + ["ovs-vswitchd", f"unix:{OVS_DIR}/db.sock", f"--pidfile={OVS_DIR}/ovs-vswitchd.pid"], ns,
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


# ================================================================== tunnel-{geneve,gtpu,ipip,mpls,sgt} and proxy-protocol

ENCAP_DOC = """The encapsulations this kernel cannot build (it has no geneve, ipip, sit, ip6tnl, gtp or
mpls_router: `ip link add ... type geneve` answers "Unknown device type", `modprobe mpls_router`
finds no module), made from REAL TLS sessions that are then encapsulated:

  1. real sessions in network namespaces (prefix $PW_NS_PREFIX, default pwe-): curl 7.88 and
     openssl s_client 3.0 against openssl s_server 3.0 (one leaf from a private CA), over IPv4
     and IPv6, captured with tcpdump on the client's veth (Ethernet link type);
  2. each captured frame wrapped by scapy's own implementations of Geneve, GTP-U (with and
     without a 5G PDU session container), MPLS (unicast stack, multicast, Ethernet pseudo-wire
     with control word) and IPv4/IPv6 in IPv6/IPv4; TrustSec CMD headers (scapy has no layer for
     them) are written from the header layout Wireshark's dissector reads.

tunnel-geneve-ovs.pcap needs no wrapping either: Open vSwitch's userspace datapath (its own
Geneve implementation, not the kernel's) mirrors the client's switch port into a Geneve tunnel.
proxy-protocol.pcap needs no wrapping: curl and openssl s_client connect to haproxy 2.6
(`mode tcp`, `send-proxy` on one frontend, `send-proxy-v2` on the other) in front of a second
haproxy that terminates TLS with `accept-proxy`; tcpdump runs on the balancer's server-side veth.
Every label is checked against tshark (verify.py) before the files are kept."""

ENCAP_NAMES = ["tunnel-geneve-ovs", "tunnel-geneve", "tunnel-gtpu", "tunnel-ipip", "tunnel-mpls", "tunnel-sgt", "proxy-protocol"]
ENCAP_DESCRIPTIONS = {
    "tunnel-geneve-ovs": "The same four kinds of real session (curl and openssl s_client against openssl s_server, IPv4 and IPv6) through an Open vSwitch switch (userspace datapath) mirroring the client's port into a real Geneve tunnel (OVS's own encapsulation, VNI 7100) to a sensor",
    "tunnel-geneve": "Real curl/openssl TLS sessions over IPv4 and IPv6 (per family one established, one unknown_ca) wrapped by scapy in Geneve on UDP 6081 (VNI 7001 with no options, VNI 7002 with a 8-byte option), IPv4 underlay",
    "tunnel-gtpu": "The same real sessions wrapped by scapy in GTP-U G-PDUs on UDP 2152 (uplink and downlink TEIDs differ; one session with a 5G PDU session container extension)",
    "tunnel-ipip": "Real IPv4 sessions inside IPv6 (protocol 4, as ip6tnl sends) and real IPv6 sessions inside IPv4 (protocol 41, as sit sends), wrapped by scapy",
    "tunnel-mpls": "Real sessions under MPLS: a two-label unicast stack (0x8847), a multicast label (0x8848), and an Ethernet pseudo-wire with control word; wrapped by scapy",
    "tunnel-sgt": "Real sessions with Cisco TrustSec CMD headers (EtherType 0x8909, SGT 10 and 20), one of them also VLAN-tagged",
    "proxy-protocol": "curl and openssl s_client through haproxy 2.6 send-proxy (v1) and send-proxy-v2 to a TLS server (haproxy accept-proxy), captured between the balancer and the server",
}
ENC_CA_NAME = "encap-ca.pem"


def enc_ns(name):
    return os.environ.get("PW_NS_PREFIX", "pwe-") + name


def enc_certs(work):
    c = work / "certs"
    c.mkdir()
    pc.sh(f"""cd {c}
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj '/O=Pinwatch Encap Test/CN=Pinwatch Encap Test CA' \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' -out ca.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out leaf.key
openssl req -new -key leaf.key -subj '/O=Pinwatch Encap Test/CN=www.encap.test' -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:encap.test,DNS:*.encap.test\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 -extfile leaf.ext -out leaf.pem 2>/dev/null
cat leaf.pem leaf.key > leaf-with-key.pem
""")
    return c


def enc_pair(a, a_ns, a_addr4, a_addr6, b, b_ns, b_addr4, b_addr6):
    pc.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    for dev, ns, a4, a6 in ((a, a_ns, a_addr4, a_addr6), (b, b_ns, b_addr4, b_addr6)):
        pc.run(["ip", "link", "set", dev, "netns", ns])
        pc.sh(f"ip addr add {a4}/24 dev {dev}; ip -6 addr add {a6}/64 dev {dev} nodad; ip link set {dev} up", ns=ns)
        no_offload(ns, dev)


def enc_namespaces(names):
    teardown(names)
    for ns in names:
        pc.run(["ip", "netns", "add", ns])
        pc.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=0; ip link set lo up", ns=ns)


def enc_capture(ns, dev, out):
    p = pc.spawn(["tcpdump", "-i", dev, "-s", "0", "-U", "-w", str(out), "tcp"], ns, "tcpdump-" + out.stem)
    time.sleep(1.0)
    return p


def enc_stop_capture(p):
    # tcpdump writes with -U; give the last session's final packets time to reach the file.
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=10)
    pc.PROCS.remove(p)


# The sessions every encapsulated capture carries: (client tool, address family, SNI, trusts CA?).
ENC_SESSIONS = [
    ("curl", 4, "www.encap.test", True),
    ("openssl", 4, "api.encap.test", False),
    ("curl", 6, "v6.encap.test", True),
    ("openssl", 6, "api6.encap.test", False),
]
ENC_SERVER = {4: "10.78.1.1", 6: "fd78:1::1"}
ENC_CLIENT = {4: "10.78.1.2", 6: "fd78:1::2"}


def enc_client(ns, tool, addr, host, port, trust, ca):
    """One session from namespace `ns` to `addr` (IPv6 in brackets): curl trusting the CA, or
    openssl s_client with the system store, which does not hold the private CA, so the
    handshake fails with unknown_ca."""
    if tool == "curl":
        cmd = ["curl", "-sS", "-o", "/dev/null", "--max-time", "10", "--resolve", f"{host}:{port}:{addr}",
               f"https://{host}:{port}/"] + (["--cacert", str(ca)] if trust else [])
    else:
        cmd = ["openssl", "s_client", "-connect", f"{addr}:{port}", "-servername", host, "-verify_return_error", "-tls1_2"]
    r = subprocess.run(["ip", "netns", "exec", ns] + cmd, input=b"", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=20)
    time.sleep(0.3)
    return r.returncode


def enc_server_addr(family):
    return ENC_SERVER[4] if family == 4 else f"[{ENC_SERVER[6]}]"


def enc_expect(tool, trust):
    if trust:
        return "established", None
    return "client_alert", "unknown_ca"


def enc_plain_sessions(work, certs):
    """Runs ENC_SESSIONS between two namespaces; returns the capture (Ethernet link type)."""
    c, s = enc_ns("c"), enc_ns("s")
    names = [c, s]
    enc_namespaces(names)
    enc_pair("wiec0", c, ENC_CLIENT[4], ENC_CLIENT[6], "wies0", s, ENC_SERVER[4], ENC_SERVER[6])
    for family, port in ((4, 443), (6, 443)):
        addr = enc_server_addr(family)
        pc.spawn(["openssl", "s_server", "-quiet", f"-{family}", "-accept", f"{addr}:{port}", "-www",
                  "-cert", str(certs / "leaf.pem"), "-key", str(certs / "leaf.key")], s, f"s_server{family}")
    time.sleep(1.0)
    out = work / "plain.pcap"
    cap = enc_capture(c, "wiec0", out)
    for tool, family, host, trust in ENC_SESSIONS:
        enc_client(c, tool, enc_server_addr(family), host, 443, trust, certs / "ca.pem")
    enc_stop_capture(cap)
    teardown(names)
    return out


def enc_truth(name, note, per_session=None):
    conns = []
    for i, (tool, family, host, trust) in enumerate(ENC_SESSIONS):
        outcome, alert = enc_expect(tool, trust)
        extra = (per_session or {}).get(i, {})
        if extra.get("skip"):
            continue
        conns.append({"client_ip": ENC_CLIENT[family], "sni": host, "connect_target": None,
                      "client": ("curl --cacert encap-ca.pem" if trust else "openssl s_client -verify_return_error -tls1_2 (system store)"),
                      "tls": "1.3" if tool == "curl" else "1.2", "count": 1, "expect_outcome": outcome,
                      "expect_alert": alert, "through_proxy": False, "pinning": False,
                      "note": note + (f"; {extra['note']}" if extra.get("note") else "")})
    return {"capture": f"{name}.pcap", "made_by": "scripts/captures/tunnels.py encap", "proxy": {},
            "ca": f"certs/{ENC_CA_NAME}", "connections": conns}


def enc_wrap_all(plain, work):
    """Writes the scapy-wrapped captures from the plain one; returns {name: truth}."""
    from scapy.all import IP, IPv6, UDP, Ether, Dot1Q, Raw, rdpcap, wrpcap
    from scapy.contrib.geneve import GENEVE
    from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
    from scapy.contrib.mpls import MPLS

    frames = rdpcap(str(plain))

    def endpoint(pkt):
        ip = pkt[IP] if IP in pkt else pkt[IPv6]
        tcp = ip.payload
        return (4 if IP in pkt else 6), (tcp.sport if tcp.dport == 443 else tcp.dport), tcp.dport == 443

    # Sessions of one address family ran one after the other: first-seen order names them.
    first_seen = {}
    for f in frames:
        family, port, _ = endpoint(f)
        first_seen.setdefault(family, [])
        if port not in first_seen[family]:
            first_seen[family].append(port)
    for family in (4, 6):
        want = sum(1 for x in ENC_SESSIONS if x[1] == family)
        if len(first_seen.get(family, [])) != want:
            raise RuntimeError(f"plain capture has {first_seen.get(family)} IPv{family} sessions, expected {want}")

    def session_of(pkt):
        family, port, upstream = endpoint(pkt)
        order = [i for i, x in enumerate(ENC_SESSIONS) if x[1] == family]
        return order[first_seen[family].index(port)], upstream

    def write(name, build):
        out = []
        for f in frames:
            session, upstream = session_of(f)
            w = build(f, session, upstream)
            w.time = f.time
            out.append(w)
        wrpcap(str(pc.OUT / f"{name}.pcap"), out)

    underlay = Ether(src="02:00:00:00:09:01", dst="02:00:00:00:09:02")
    u4 = lambda up: IP(src="10.78.9.1", dst="10.78.9.2") if up else IP(src="10.78.9.2", dst="10.78.9.1")
    u6 = lambda up: IPv6(src="fd78:9::1", dst="fd78:9::2") if up else IPv6(src="fd78:9::2", dst="fd78:9::1")
    truths = {}

    # Geneve: sessions 0 and 2 in VNI 7001 without options, 1 and 3 in VNI 7002 with one option.
    def geneve(f, session, up):
        if session % 2 == 0:
            g = GENEVE(vni=7001, proto=0x6558)
        else:
            g = GENEVE(vni=7002, proto=0x6558, optionlen=2, options=bytes.fromhex("0108 01 01 0000002a"))
        return underlay / u4(up) / UDP(sport=50000 + session, dport=6081) / g / f
    write("tunnel-geneve", geneve)
    truths["tunnel-geneve"] = enc_truth("tunnel-geneve", "scapy Geneve over IPv4", {
        0: {"note": "VNI 7001"}, 1: {"note": "VNI 7002, one option"}, 2: {"note": "VNI 7001"}, 3: {"note": "VNI 7002, one option"}})

    # GTP-U: the eNodeB/gNB (10.78.9.1) and the UPF (10.78.9.2); uplink TEID 0x100+n, downlink 0x200+n.
    def gtpu(f, session, up):
        inner = f.payload
        teid = (0x100 if up else 0x200) + session
        if session == 1:
            hdr = GTP_U_Header(teid=teid, E=1, next_ex=0x85) / GTPPDUSessionContainer(type=1 if up else 0, QFI=9)
        else:
            hdr = GTP_U_Header(teid=teid)
        return underlay / u4(up) / UDP(sport=2152, dport=2152) / hdr / inner
    write("tunnel-gtpu", gtpu)
    truths["tunnel-gtpu"] = enc_truth("tunnel-gtpu", "scapy GTP-U G-PDU, uplink TEID 0x10N, downlink 0x20N", {
        1: {"note": "5G PDU session container extension"}})

    # IPv4 in IPv6 (protocol 4) and IPv6 in IPv4 (protocol 41).
    def ipip(f, session, up):
        inner = f.payload
        if IP in f:
            return underlay / u6(up) / inner
        return underlay / u4(up) / inner
    write("tunnel-ipip", ipip)
    truths["tunnel-ipip"] = enc_truth("tunnel-ipip", "scapy", {
        0: {"note": "IPv4 in IPv6"}, 1: {"note": "IPv4 in IPv6"}, 2: {"note": "IPv6 in IPv4"}, 3: {"note": "IPv6 in IPv4"}})

    # MPLS: 0 two-label unicast stack, 1 multicast label, 2 and 3 an Ethernet pseudo-wire with
    # control word (4 zero bytes) carrying the whole client frame.
    def mpls(f, session, up):
        if session == 0:
            return Ether(src=f.src, dst=f.dst, type=0x8847) / MPLS(label=1000, s=0, ttl=64) / MPLS(label=2000, s=1, ttl=64) / f.payload
        if session == 1:
            return Ether(src=f.src, dst=f.dst, type=0x8848) / MPLS(label=3000, s=1, ttl=64) / f.payload
        return Ether(src="02:00:00:00:09:01", dst="02:00:00:00:09:02", type=0x8847) / \
            MPLS(label=4000, s=0, ttl=64) / MPLS(label=5000 + session, s=1, ttl=64) / Raw(b"\0\0\0\0") / f
    write("tunnel-mpls", mpls)
    truths["tunnel-mpls"] = enc_truth("tunnel-mpls", "scapy MPLS", {
        0: {"note": "unicast labels 1000/2000"}, 1: {"note": "multicast label 3000"},
        2: {"note": "Ethernet pseudo-wire, control word, labels 4000/5002"}, 3: {"note": "Ethernet pseudo-wire, control word, labels 4000/5003"}})

    # TrustSec: CMD version 1, length 1, option SGT; session 1 also inside an 802.1Q tag.
    def sgt(f, session, up):
        tag = 10 if session % 2 == 0 else 20
        cmd = bytes([1, 1, 0, 1]) + tag.to_bytes(2, "big") + f.type.to_bytes(2, "big")
        eth = Ether(src=f.src, dst=f.dst, type=0x8909)
        if session == 1:
            eth = Ether(src=f.src, dst=f.dst) / Dot1Q(vlan=300, type=0x8909)
        return eth / Raw(cmd + bytes(f.payload))
    write("tunnel-sgt", sgt)
    truths["tunnel-sgt"] = enc_truth("tunnel-sgt", "TrustSec CMD header", {1: {"note": "VLAN 300 outside the CMD header"}})
    return truths


def enc_ovs_geneve(work, certs):
    """The sessions of ENC_SESSIONS through an Open vSwitch (userspace datapath) switch whose
    client port is mirrored into a real Geneve tunnel (OVS's own encapsulation, VNI 7100) to a
    sensor; tcpdump on the sensor. Returns the truth."""
    c, s, sw, sen = enc_ns("c"), enc_ns("s"), enc_ns("sw"), enc_ns("sen")
    names = [c, s, sw, sen]
    enc_namespaces(names)
    pc.WORK = work
    start_ovs(sw)
    ovs("ovs-vsctl", "add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev", ns=sw)
    for host, ns, v4, v6 in (("c", c, ENC_CLIENT[4], ENC_CLIENT[6]), ("s", s, ENC_SERVER[4], ENC_SERVER[6])):
        pc.run(["ip", "link", "add", f"wie{host}0", "type", "veth", "peer", "name", f"wie{host}p"])
        pc.run(["ip", "link", "set", f"wie{host}0", "netns", ns])
        pc.run(["ip", "link", "set", f"wie{host}p", "netns", sw])
        pc.sh(f"ip addr add {v4}/24 dev wie{host}0; ip -6 addr add {v6}/64 dev wie{host}0 nodad; ip link set wie{host}0 up", ns=ns)
        pc.sh(f"ip link set wie{host}p up", ns=sw)
        no_offload(ns, f"wie{host}0")
        no_offload(sw, f"wie{host}p")
        ovs("ovs-vsctl", "add-port", "br0", f"wie{host}p", ns=sw)
    # Underlay: the switch's address on br-phy, jumbo frames so mirrored full-size frames fit.
    pc.run(["ip", "link", "add", "wiemon", "type", "veth", "peer", "name", "wiemons"])
    pc.run(["ip", "link", "set", "wiemon", "netns", sw])
    pc.run(["ip", "link", "set", "wiemons", "netns", sen])
    ovs("ovs-vsctl", "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
        "--", "set", "interface", "br-phy", "mtu_request=9000", ns=sw)
    pc.sh("ip link set wiemon mtu 9000 up", ns=sw)
    no_offload(sw, "wiemon")
    ovs("ovs-vsctl", "add-port", "br-phy", "wiemon", "--", "set", "interface", "wiemon", "mtu_request=9000", ns=sw)
    pc.sh("ip addr add 10.78.9.1/24 dev br-phy; ip link set br-phy up", ns=sw)
    pc.sh("ip link set wiemons mtu 9000; ip addr add 10.78.9.100/24 dev wiemons; ip link set wiemons up; "
          "iptables -A INPUT -p udp --dport 6081 -j DROP", ns=sen)
    no_offload(sen, "wiemons")
    time.sleep(1.0)
    mac = pc.sh("cat /sys/class/net/wiemons/address", ns=sen).stdout.strip()
    ovs("ovs-appctl", "tnl/neigh/set", "br-phy", "10.78.9.100", mac, ns=sw)
    ovs("ovs-vsctl", "add-port", "br0", "gnv0", "--", "set", "interface", "gnv0", "type=geneve",
        "options:remote_ip=10.78.9.100", "options:key=7100", ns=sw)
    ovs("ovs-vsctl", "--", "--id=@p", "get", "port", "wiecp", "--", "--id=@o", "get", "port", "gnv0",
        "--", "--id=@m", "create", "mirror", "name=m0", "select_src_port=[@p]", "select_dst_port=[@p]",
        "output_port=@o", "--", "add", "bridge", "br0", "mirrors", "@m", ns=sw)
    errors = ovs("ovs-vsctl", "--columns=name,error", "find", "interface", "error!=[]", ns=sw)
    if errors.strip():
        raise RuntimeError(f"OVS interface errors:\n{errors}")
    for family in (4, 6):
        addr = enc_server_addr(family)
        pc.spawn(["openssl", "s_server", "-quiet", f"-{family}", "-accept", f"{addr}:443", "-www",
                  "-cert", str(certs / "leaf.pem"), "-key", str(certs / "leaf.key")], s, f"ovs-s_server{family}")
    time.sleep(1.5)
    out = pc.OUT / "tunnel-geneve-ovs.pcap"
    p = pc.spawn(["tcpdump", "-i", "wiemons", "-s", "0", "-U", "-w", str(out), "udp port 6081"], sen, "tcpdump-ovs")
    time.sleep(1.0)
    for tool, family, host, trust in ENC_SESSIONS:
        enc_client(c, tool, enc_server_addr(family), host, 443, trust, certs / "ca.pem")
    enc_stop_capture(p)
    teardown(names)
    return enc_truth("tunnel-geneve-ovs", "Open vSwitch mirror into Geneve, VNI 7100")


def enc_proxy_protocol(work, certs):
    c, lb, s = enc_ns("c"), enc_ns("lb"), enc_ns("s")
    names = [c, lb, s]
    enc_namespaces(names)
    enc_pair("wiec0", c, "10.78.3.2", "fd78:3::2", "wiel0", lb, "10.78.3.1", "fd78:3::1")
    enc_pair("wiel1", lb, "10.78.4.1", "fd78:4::1", "wies1", s, "10.78.4.2", "fd78:4::2")
    cfg_lb = work / "lb.cfg"
    cfg_lb.write_text("""global
    log stdout format raw local0 warning
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend v1
    bind 10.78.3.1:443
    default_backend v1
backend v1
    server s 10.78.4.2:8443 send-proxy
frontend v2
    bind [fd78:3::1]:443
    bind 10.78.3.1:444
    default_backend v2
backend v2
    server s 10.78.4.2:8444 send-proxy-v2
""")
    cfg_s = work / "srv.cfg"
    cfg_s.write_text(f"""global
    log stdout format raw local0 warning
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend tls
    bind 10.78.4.2:8443 ssl crt {certs / 'leaf-with-key.pem'} accept-proxy
    bind 10.78.4.2:8444 ssl crt {certs / 'leaf-with-key.pem'} accept-proxy
    http-request return status 200 content-type text/plain string ok
""")
    pc.spawn(["haproxy", "-db", "-f", str(cfg_s)], s, "haproxy-server")
    pc.spawn(["haproxy", "-db", "-f", str(cfg_lb)], lb, "haproxy-lb")
    time.sleep(1.5)
    out = pc.OUT / "proxy-protocol.pcap"
    cap = enc_capture(lb, "wiel1", out)
    ca = certs / "ca.pem"
    runs = [
        ("curl", "10.78.3.1", 443, "www.encap.test", True, 1, "10.78.3.2"),
        ("openssl", "10.78.3.1", 443, "api.encap.test", False, 1, "10.78.3.2"),
        ("curl", "10.78.3.1", 444, "www.encap.test", True, 2, "10.78.3.2"),
        ("openssl", "10.78.3.1", 444, "api.encap.test", False, 2, "10.78.3.2"),
        ("curl", "[fd78:3::1]", 443, "v6.encap.test", True, 2, "fd78:3::2"),
    ]
    conns = []
    for tool, ip, port, host, trust, version, client in runs:
        enc_client(c, tool, ip, host, port, trust, ca)
        outcome, alert = enc_expect(tool, trust)
        conns.append({"client_ip": "10.78.4.1", "sni": host, "connect_target": None,
                      "client": ("curl --cacert encap-ca.pem" if trust else "openssl s_client -verify_return_error -tls1_2 (system store)"),
                      "tls": "1.3" if tool == "curl" else "1.2", "count": 1, "expect_outcome": outcome, "expect_alert": alert,
                      "through_proxy": False, "pinning": False,
                      "proxy_protocol": {"version": version, "src_ip": client, "dst_ip": ip.strip("[]"), "dst_port": port},
                      "note": f"haproxy send-proxy{'-v2' if version == 2 else ''}; the balancer 10.78.4.1 is the TCP client"})
    enc_stop_capture(cap)
    teardown(names)
    return {"capture": "proxy-protocol.pcap", "made_by": "scripts/captures/tunnels.py encap", "proxy": {},
            "ca": f"certs/{ENC_CA_NAME}", "balancer": "haproxy 2.6", "connections": conns}


def enc_tshark_check(pcap, truth):
    """tshark's own view of a wrapped capture: every ClientHello's SNI and every unknown_ca alert
    the truth names. (verify.py attributes streams by IPv4 source only, which for IPv6 inside
    IPv4 is the underlay's address, so it cannot check these files per client.)"""
    r = subprocess.run(["tshark", "-n", "-r", str(pcap), "-Y", "tls.handshake.type == 1 or tls.alert_message",
                        "-T", "fields", "-e", "tls.handshake.extensions_server_name", "-e", "tls.alert_message.desc"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    snis, alerts = [], 0
    for line in r.stdout.splitlines():
        sni, _, desc = line.partition("\t")
        if sni:
            snis.append(sni)
        alerts += desc.split(",").count("48")
    want_snis = sorted(c["sni"] for c in truth["connections"])
    want_alerts = sum(1 for c in truth["connections"] if c.get("expect_alert") == "unknown_ca")
    ok = sorted(snis) == want_snis and alerts == want_alerts
    print(f"== {pcap.name}: tshark SNIs {sorted(snis)}, unknown_ca alerts {alerts}: {'ok' if ok else 'MISMATCH'}")
    return ok


def encap_main():
    if os.geteuid() != 0:
        sys.exit("tunnels.py encap: needs root (network namespaces, tcpdump); run it with sudo")
    for tool in ("haproxy", "ovs-vswitchd", "ovsdb-server", "ethtool", "tcpdump", "openssl", "curl", "tshark"):
        if not shutil.which(tool):
            sys.exit(f"tunnels.py encap: {tool} is missing; apt-get install {tool}")
    work = Path(tempfile.mkdtemp(prefix="pinwatch-encap-"))
    pc.WORK = work
    pc.LOG = open(work / "log.txt", "w")
    pc.OUT.mkdir(parents=True, exist_ok=True)
    (pc.OUT / "certs").mkdir(exist_ok=True)
    names = [enc_ns(n) for n in ("c", "s", "lb", "sw", "sen")]
    try:
        certs = enc_certs(work)
        plain = enc_plain_sessions(work, certs)
        truths = enc_wrap_all(plain, work)
        truths["proxy-protocol"] = enc_proxy_protocol(work, certs)
        truths["tunnel-geneve-ovs"] = enc_ovs_geneve(work, certs)
        shutil.copy(certs / "ca.pem", pc.OUT / "certs" / ENC_CA_NAME)
        ok = True
        for name, truth in truths.items():
            (pc.OUT / f"{name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
            ok &= enc_tshark_check(pc.OUT / f"{name}.pcap", truth)
        # The balancer's capture has plain IPv4 clients, which verify.py attributes fully.
        ok &= verify.verify_file(pc.OUT / "proxy-protocol.pcap", pc.OUT / "proxy-protocol.truth.json")
        import readme
        readme.write(pc.OUT, {**pc.DESCRIPTIONS, **DESCRIPTIONS, **ENCAP_DESCRIPTIONS})
        if not ok:
            log(f"SOME LABELS DO NOT MATCH THE WIRE (see above); logs kept in {work}")
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0
    finally:
        teardown(names)


if __name__ == "__main__":
    sys.exit(encap_main() if sys.argv[1:] == ["encap"] else main())
