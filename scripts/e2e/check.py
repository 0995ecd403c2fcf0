#!/usr/bin/env python3
"""Assertions for scripts/e2e-loop on pinwatch's own output (NDJSON and the export YAML).

usage:
  check.py rules RULES.jsonl NAME MIN_CONF
  check.py ignore-hosts CONFIG.yaml NAME PORT
  check.py phase1 CONNECTIONS.jsonl NAME
  check.py phase2 CONNECTIONS.jsonl NAME ORIGIN_CA.pem OTHER_NAME
  check.py no-rule RULES.jsonl NAME

Each prints what it found (one line per fact, prefixed with two spaces) and exits 1 with
a "FAIL:" line when the expectation does not hold.
"""
import json
import re
import subprocess
import sys
from collections import Counter


def fail(msg):
    print(f"  FAIL: {msg}")
    sys.exit(1)


def ndjson(path):
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                fail(f"{path}:{n}: not JSON: {line[:120]!r}")
    return out


def rule_matches(rule, name):
    m = rule.get("match", {})
    if m.get("host") == name:
        return True
    s = m.get("suffix")
    return bool(s) and (name == s or name.endswith("." + s))


def cmd_rules(path, name, min_conf):
    rules = ndjson(path)
    print(f"  {len(rules)} rule(s) in {path}")
    for r in rules:
        print(f"  rule {r.get('id')} match={json.dumps(r.get('match'))} confidence={r.get('confidence')} capped_by={r.get('capped_by')}")
    hits = [r for r in rules if rule_matches(r, name)]
    if not hits:
        fail(f"no rule for {name}")
    best = max(hits, key=lambda r: r.get("confidence", 0))
    if best.get("confidence", 0) < float(min_conf):
        fail(f"best rule for {name} has confidence {best.get('confidence')} < {min_conf}")
    if all(r.get("match", {}).get("client_ja4") for r in hits):
        # mitmproxy cannot express a JA4 scope: export writes it commented out, so the loop cannot close
        print(f"  note: every rule for {name} is scoped to a client JA4")
    print(f"  ok: rule for {name} at confidence {best['confidence']} (>= {min_conf})")


def load_yaml(path):
    text = open(path).read()
    try:
        import yaml  # PyYAML
        return yaml.safe_load(text), "PyYAML"
    except ImportError:
        pass
    try:
        from ruamel.yaml import YAML
        return YAML(typ="safe").load(text), "ruamel.yaml"
    except ImportError:
        pass
    # Last resort, the flat shape export documents: `ignore_hosts:` then `  - 'REGEX'` items.
    items = re.findall(r"^\s*-\s*'([^']*)'\s*$", text, re.M)
    return {"ignore_hosts": items}, "line scan"


def cmd_ignore_hosts(path, name, port):
    doc, how = load_yaml(path)
    if not isinstance(doc, dict) or "ignore_hosts" not in doc:
        fail(f"{path} ({how}): no top-level ignore_hosts key: {doc!r}")
    lst = doc["ignore_hosts"]
    if not isinstance(lst, list) or not all(isinstance(x, str) for x in lst):
        fail(f"{path}: ignore_hosts is not a list of strings: {lst!r}")
    print(f"  ignore_hosts ({how}): {lst}")
    target = f"{name}:{port}"
    matching = []
    for rx in lst:
        try:
            if re.search(rx, target):
                matching.append(rx)
        except re.error as e:
            fail(f"ignore_hosts entry {rx!r} is not a valid Python regex: {e}")
    if not matching:
        fail(f"no ignore_hosts regex matches {target!r}")
    # The regexes must not be wider than the name: a neighbour must stay inspected.
    for other in (f"x{name}:{port}", f"{name}.evil.test:{port}", f"www.other.test:{port}"):
        wide = [rx for rx in lst if re.search(rx, other)]
        if wide:
            fail(f"ignore_hosts {wide} also match {other!r}")
    print(f"  ok: {matching} match {target!r} and nothing wider")


def summarize(recs):
    c = Counter((r.get("sni"), r["outcome"], r.get("outcome_detail"), r.get("tls_version")) for r in recs)
    for (sni, outcome, detail, ver), n in sorted(c.items(), key=lambda kv: str(kv[0])):
        print(f"  wire: {n:2d} x sni={sni} {ver} -> {outcome}" + (f" ({detail})" if detail else ""))


def issuers(recs):
    return Counter(r["cert"]["issuer"] for r in recs if r.get("cert") and r["cert"].get("parsed"))


def cmd_phase1(path, name):
    recs = ndjson(path)
    summarize(recs)
    pinned = [r for r in recs if r.get("sni") == name]
    if not pinned:
        fail(f"no connection with SNI {name} on the wire")
    bad = [r for r in pinned if r["outcome"] == "established"]
    if bad:
        fail(f"{len(bad)} pinned connection(s) established through the intercepting proxy")
    alerts = Counter(r.get("outcome_detail") for r in pinned if r["outcome"] == "client_alert")
    print(f"  pinned client alerts: {dict(alerts)}; issuers seen: {dict(issuers(pinned))}")
    if any("mitmproxy" not in i for i in issuers(pinned)):
        fail("a pinned connection saw a certificate not minted by mitmproxy")
    print(f"  ok: {len(pinned)} connection(s) to {name}, none established")


def ski(pem):
    out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-ext", "subjectKeyIdentifier"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].strip().replace(":", "").lower()


def subject(pem):
    out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-subject", "-nameopt", "RFC2253"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("=", 1)[1].strip()


def cmd_phase2(path, name, ca_pem, other):
    recs = ndjson(path)
    summarize(recs)
    pinned = [r for r in recs if r.get("sni") == name]
    if not pinned:
        fail(f"no connection with SNI {name} on the wire")
    not_est = [r for r in pinned if r["outcome"] != "established"]
    if not_est:
        fail(f"{len(not_est)} of {len(pinned)} pinned connection(s) not established: "
             + ", ".join(f"{r['outcome']}/{r.get('outcome_detail')}" for r in not_est))
    want_aki, want_cn = ski(ca_pem), subject(ca_pem)
    with_cert = [r for r in pinned if r.get("cert") and r["cert"].get("parsed")]
    if not with_cert:
        fail("no pinned connection showed its certificate (expected the TLS 1.2 ones to)")
    for r in with_cert:
        c = r["cert"]
        print(f"  {r['tls_version']} {r['client_ip']}: leaf {c['subject']!r} issued by {c['issuer']!r} aki={c.get('authority_key_id')}")
        if c.get("authority_key_id") != want_aki:
            fail(f"leaf authority key id {c.get('authority_key_id')} is not the origin CA's {want_aki}")
        if "mitmproxy" in c["issuer"].lower():
            fail("leaf issued by mitmproxy: still intercepted")
    hidden = len(pinned) - len(with_cert)
    # The bypass must be narrow: the other name is still intercepted (mitmproxy's leaf).
    others = [r for r in recs if r.get("sni") == other]
    if not others or any(r["outcome"] != "established" for r in others):
        fail(f"{other}: expected established connections through the proxy, got "
             + str([r["outcome"] for r in others]))
    oi = issuers(others)
    if not oi or any("mitmproxy" not in i for i in oi):
        fail(f"{other}: expected mitmproxy-minted leaves (still inspected), got {dict(oi)}")
    print(f"  {other}: still intercepted, leaves issued by {dict(oi)}")
    print(f"  origin CA: {want_cn} (ski {want_aki})")
    print(f"  ok: {len(pinned)} connection(s) to {name} established, {len(with_cert)} with the origin's leaf on the wire"
          + (f", {hidden} TLS 1.3 (certificate encrypted)" if hidden else ""))


def cmd_no_rule(path, name):
    hits = [r for r in ndjson(path) if rule_matches(r, name)]
    if hits:
        fail(f"a rule for {name} is still suggested after the bypass: {hits[0].get('id')}")
    print(f"  ok: no rule for {name} any more")


def main():
    a = sys.argv[1:]
    cmds = {"rules": (cmd_rules, 3), "ignore-hosts": (cmd_ignore_hosts, 3), "phase1": (cmd_phase1, 2),
            "phase2": (cmd_phase2, 4), "no-rule": (cmd_no_rule, 2)}
    if not a or a[0] not in cmds or len(a) - 1 != cmds[a[0]][1]:
        sys.exit(__doc__)
    cmds[a[0]][0](*a[1:])


if __name__ == "__main__":
    main()
