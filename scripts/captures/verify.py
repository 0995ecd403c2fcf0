#!/usr/bin/env python3
"""Check NAME.truth.json labels against NAME.pcap with tshark.

An independent, deliberately simple classifier over tshark's per-packet TLS
record view (content type + length per record, plaintext alert codes, CONNECT
lines). usage: verify.py captures/NAME.pcap [...]  (truth file beside each pcap)
"""
import hashlib
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

FIELDS = ["frame.time_relative", "tcp.stream", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
          "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset", "tcp.len",
          "tls.record.content_type", "tls.record.opaque_type", "tls.record.length", "tls.handshake.type", "tls.alert_message.desc",
          "tls.handshake.extensions_server_name", "tls.handshake.extensions.supported_version",
          "http.request.method", "http.request.uri", "http.response.code", "sll.ifindex"]

# Linux's default VXLAN port (no `dstport` given), which tshark does not know as VXLAN.
VXLAN_LINUX = ["-d", "udp.port==8472,vxlan"]
# One value per packet, except in tunnels (outer and inner IP header).
SCALAR_FIELDS = ["ip.src", "ip.dst"]
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure", 42: "bad_certificate",
          43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
          47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
          70: "protocol_version", 80: "internal_error", 90: "user_canceled", 112: "unrecognized_name", 116: "certificate_required"}
CLIENT_NET = ipaddress.ip_network("10.77.1.0/24")


def ints(v):
    out = []
    for x in v.replace(",", ";").split(";"):
        x = x.strip()
        if x:
            try:
                out.append(int(x, 0))
            except ValueError:
                pass
    return out


def load(pcap):
    cmd = ["tshark", "-n", "-r", str(pcap), "-o", "tcp.desegment_tcp_streams:TRUE", *VXLAN_LINUX, "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    streams = {}
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t")))
        # Inside a tunnel tshark lists the outer header's fields first: keep the innermost.
        for f in SCALAR_FIELDS:
            if v.get(f):
                v[f] = v[f].split(";")[-1]
        if not v.get("tcp.stream"):
            continue
        sid = int(v["tcp.stream"])
        st = streams.setdefault(sid, {"pkts": []})
        st["pkts"].append(v)
    return streams


def classify(st):
    pk = st["pkts"]
    syn = next((p for p in pk if p["tcp.flags.syn"] in ("1", "True") and p["tcp.flags.ack"] in ("0", "False")), None)
    if syn is None:
        return {"outcome": "midstream"}
    cip, sip, sport = syn["ip.src"], syn["ip.dst"], syn["tcp.dstport"]
    r = {"client_ip": cip, "server": f"{sip}:{sport}", "sni": None, "connect_target": None, "connect_status": None,
         "tls": None, "outcome": None, "alert": None, "delay_ms": None, "t": float(syn["frame.time_relative"])}
    seen_ch = seen_sh = False
    c_ccs = c_fin = closing = False
    c_payload = False
    last_server_t = None
    ver = None

    def done(outcome, t=None, alert=None):
        r["outcome"], r["alert"] = outcome, alert
        if t is not None and last_server_t is not None:
            r["delay_ms"] = round((t - last_server_t) * 1000, 1)
        return r

    for p in pk:
        if p["http.response.code"] and not (p["ip.src"] == cip and p["tcp.srcport"] == syn["tcp.srcport"]):
            r["connect_status"] = int(p["http.response.code"].split(";")[0])
            break
    for p in pk:
        if syn.get("sll.ifindex") and p.get("sll.ifindex") and p["sll.ifindex"] != syn["sll.ifindex"]:
            continue  # -i any: same flow seen on a second interface
        fromc = p["ip.src"] == cip and p["tcp.srcport"] == syn["tcp.srcport"]
        t = float(p["frame.time_relative"])
        # plaintext record types first, then TLS 1.3 opaque (encrypted) ones, in wire order
        types = ints(p["tls.record.content_type"]) + ints(p["tls.record.opaque_type"])
        lens = ints(p["tls.record.length"])
        hs = ints(p["tls.handshake.type"])
        fin = p["tcp.flags.fin"] in ("1", "True")
        rst = p["tcp.flags.reset"] in ("1", "True")
        plen = int(p["tcp.len"] or 0)
        if p["http.request.method"] == "CONNECT" and fromc:
            r["connect_target"] = p["http.request.uri"]
        if fromc:
            if 1 in hs and not seen_ch:
                seen_ch = True
                if p["tls.handshake.extensions_server_name"]:
                    r["sni"] = p["tls.handshake.extensions_server_name"].split(";")[0]
            elif plen and not seen_ch and p["http.request.method"] != "CONNECT":
                c_payload = True
            if seen_sh:
                alert_descs = ints(p["tls.alert_message.desc"])
                for ct, ln in zip(types, lens):
                    if ct == 21:
                        if alert_descs and not (c_ccs or c_fin):
                            return done("client_alert", t, ALERTS.get(alert_descs[0], str(alert_descs[0])))
                        if ver == "1.3" and not c_fin:
                            return done("client_alert", t, "encrypted")
                        if c_fin:  # encrypted alert (close_notify or fatal) after the client Finished
                            return done("client_closed_after_handshake", t)
                        closing = True
                    elif ct == 20:
                        c_ccs = True
                    elif ct == 22 and ver == "1.2" and c_ccs:
                        c_fin = True
                    elif ct == 23:
                        if ver == "1.2":
                            if c_fin:
                                return done("established", t)
                        else:
                            if not c_fin:
                                if ln == 19:
                                    return done("client_alert", t, "encrypted")
                                c_fin = True
                            elif ln == 19:  # alert-sized record right after Finished: close_notify
                                return done("client_closed_after_handshake", t)
                            else:
                                return done("established", t)
            if fin or rst:
                if not seen_ch:
                    if r["connect_status"] and r["connect_status"] != 200:
                        return done("server_abort")
                    if c_payload:
                        return done("not_tls")
                    return done("client_closed_before_server_hello", t)
                if not seen_sh:
                    return done("client_closed_before_server_hello", t)
                if c_fin:
                    return done("client_closed_after_handshake", t)
                return done("client_closed_in_handshake", t)
        else:
            if 2 in hs and seen_ch and not seen_sh:
                seen_sh = True
                sv = ints(p["tls.handshake.extensions.supported_version"])
                ver = "1.3" if 0x0304 in sv else "1.2"
                r["tls"] = ver
            if plen:
                last_server_t = t
            if r["connect_target"] and r["connect_status"] and r["connect_status"] != 200 and not seen_ch:
                return done("server_abort")
            if not seen_ch and plen and c_payload:
                return done("not_tls")
            if seen_ch and (21 in types or fin or rst):
                if c_payload:
                    return done("not_tls")
                return done("server_abort", alert=None)
    if c_payload and not seen_ch:
        return done("not_tls")
    return done("incomplete")


JA4_FIELDS = ["tcp.stream", "tls.handshake.version", "tls.handshake.extensions.supported_version", "tls.handshake.ciphersuite",
              "tls.handshake.extension.type", "tls.handshake.sig_hash_alg", "tls.handshake.sig_hash_alg_len",
              "tls.handshake.extensions_alpn_str",
              "tls.handshake.extensions_server_name"]


def _grease(v):
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def ja4(f):
    """JA4 (FoxIO spec, TCP) of one ClientHello from tshark's field values (tshark 4.0 has no JA4 field)."""
    vers = [v for v in ints(f["tls.handshake.extensions.supported_version"]) if not _grease(v)]
    ver = max(vers) if vers else (ints(f["tls.handshake.version"]) or [0])[0]
    vname = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}.get(ver, "00")
    ciphers = [c for c in ints(f["tls.handshake.ciphersuite"]) if not _grease(c)]
    exts = [e for e in ints(f["tls.handshake.extension.type"]) if not _grease(e)]
    alpn = (f["tls.handshake.extensions_alpn_str"].split(";")[0] if f["tls.handshake.extensions_alpn_str"] else "")
    if not alpn:
        a = "00"
    elif alpn[0].isascii() and alpn[0].isalnum() and alpn[-1].isascii() and alpn[-1].isalnum():
        a = alpn[0] + alpn[-1]
    else:
        h = alpn.encode().hex()
        a = h[0] + h[-1]
    part_a = f"t{vname}{'d' if f['tls.handshake.extensions_server_name'] else 'i'}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{a}"

    def h12(x):
        return hashlib.sha256(x.encode()).hexdigest()[:12] if x else "000000000000"
    part_b = h12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    ext_s = ",".join(f"{e:04x}" for e in sorted(e for e in exts if e not in (0x0000, 0x0010)))
    # tshark lists signature_algorithms (13) and signature_algorithms_cert (50) in one field, in
    # extension order; JA4 takes only extension 13's list (Java sends both)
    algs, lens = ints(f["tls.handshake.sig_hash_alg"]), [n // 2 for n in ints(f.get("tls.handshake.sig_hash_alg_len", ""))]
    order = [e for e in exts if e in (0x000D, 0x0032)]
    if 0x000D in order and len(lens) == len(order):
        start = sum(lens[: order.index(0x000D)])
        algs = algs[start: start + lens[order.index(0x000D)]]
    sigs = ",".join(f"{x:04x}" for x in algs)
    part_c = h12(ext_s + ("_" + sigs if sigs else "")) if ext_s or sigs else "000000000000"
    return f"{part_a}_{part_b}_{part_c}"


def ja4_by_stream(pcap):
    cmd = ["tshark", "-n", "-r", str(pcap), "-o", "tcp.desegment_tcp_streams:TRUE", *VXLAN_LINUX, "-Y", "tls.handshake.type == 1", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in JA4_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        v = dict(zip(JA4_FIELDS, line.split("\t")))
        if v.get("tcp.stream"):
            res.setdefault(int(v["tcp.stream"]), ja4(v))
    return res


def client_observations(pcap):
    streams = load(pcap)
    obs = []
    for sid, st in sorted(streams.items()):
        o = classify(st)
        o["stream"] = sid
        obs.append(o)
    client_obs = sorted((o for o in obs if o.get("client_ip")), key=lambda o: o["t"])
    other = [o for o in obs if not o.get("client_ip")]
    return client_obs, other


def ja4_by_client_order(pcap):
    """JA4 of each client connection's ClientHello (None if it sent none), in connection order."""
    j = ja4_by_stream(pcap)
    return [j.get(o["stream"]) for o in client_observations(pcap)[0]]


def verify_file(pcap, truthf, fix=False):
    truth = json.loads(Path(truthf).read_text())
    client_obs, other = client_observations(pcap)
    groups = truth.get("ja4_groups") or {}
    ja4s = ja4_by_stream(pcap) if groups else {}
    exp = [c for c in truth["connections"] for _ in range(c.get("count", 1))]
    ok = True
    print(f"== {Path(pcap).name}: {len(exp)} expected client connections, {len(client_obs)} observed, {len(other)} other streams")
    for i, e in enumerate(exp):
        o = client_obs[i] if i < len(client_obs) else {}
        probs = []
        if o.get("client_ip") != e["client_ip"]:
            probs.append(f"client_ip {o.get('client_ip')}")
        if o.get("sni") != e.get("sni"):
            probs.append(f"sni {o.get('sni')}")
        if (e.get("connect_target") or None) != o.get("connect_target"):
            probs.append(f"connect_target {o.get('connect_target')}")
        if o.get("outcome") != e["expect_outcome"]:
            probs.append(f"outcome {o.get('outcome')}")
        if (e.get("expect_alert") or None) != o.get("alert"):
            probs.append(f"alert {o.get('alert')}")
        if e.get("tls") and o.get("tls") and e["tls"] != o["tls"]:
            probs.append(f"tls {o.get('tls')}")
        if e.get("ja4_group"):
            # every connection of a group carries the one ClientHello fingerprint the truth file names
            want = groups.get(e["ja4_group"]) or []
            got = ja4s.get(o.get("stream"))
            if len(want) != 1 or got != want[0]:
                probs.append(f"ja4 {got} (group {e['ja4_group']} = {want})")
        status = "ok" if not probs else "MISMATCH " + ", ".join(probs)
        ok &= not probs
        print(f"  {e['client_ip']:<11} {str(e.get('sni') or e.get('connect_target')):<24} {e['client'][:58]:<58} "
              f"exp={e['expect_outcome']}/{e.get('expect_alert')} obs={o.get('outcome')}/{o.get('alert')} tls={o.get('tls')} "
              f"delay={o.get('delay_ms')}ms {status}")
    for o in client_obs[len(exp):]:
        ok = False
        print(f"  UNEXPECTED extra stream {o}")
    for o in other:
        print(f"  (non-client stream) {o.get('client_ip')} -> {o.get('server')} sni={o.get('sni')} {o.get('outcome')}/{o.get('alert')} tls={o.get('tls')}")
    return ok


if __name__ == "__main__":
    allok = True
    for f in sys.argv[1:]:
        p = Path(f)
        allok &= verify_file(p, p.with_name(p.name[:-len(".pcap")] + ".truth.json"))
    sys.exit(0 if allok else 1)
