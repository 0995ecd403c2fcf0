#!/usr/bin/env bash
# Makes tests/report/hostile-names.pcap: real OpenSSL TLS 1.2 handshakes on loopback whose
# server name and certificate fields are HTML/script markup. An "inspection" CA with a hostile
# subject signs a leaf with hostile subject; the clients do not trust it and abort with
# unknown_ca, as a pinning app behind a proxy would. tests/report.rs reads the capture with
# --proxy-ca hostile-ca.pem. Needs root (tcpdump), openssl, tcpdump. Run from anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'kill "${server_pid:-}" "${dump_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
port=48443
# A slash inside a field is written `\/` for -subj.
ca_subj='/CN=<script>document.title="pwned-ca"<\/script>/O=<img src=x onerror=alert(1)>'
leaf_subj='/CN="><svg onload=alert(2)>/O=<\/td><\/tr><\/table><b>leaf<\/b>'
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "$ca_subj" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj "$leaf_subj" 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 3650 2>/dev/null
openssl s_server -accept "127.0.0.1:$port" -cert leaf.pem -key leaf.key -cert_chain ca.pem -tls1_2 -quiet -naccept 1000 >/dev/null 2>&1 &
server_pid=$!
tcpdump -i lo -U -w capture.pcap "tcp port $port" 2>/dev/null &
dump_pid=$!
sleep 1
names=('<script>document.title="pwned"</script>' '"><img src=x onerror=alert(3)>.test' 'a&amp;b<!--.test')
for round in 1 2; do
  for name in "${names[@]}"; do
    openssl s_client -connect "127.0.0.1:$port" -servername "$name" -tls1_2 -verify_return_error \
      -CAfile /etc/ssl/certs/ca-certificates.crt </dev/null >/dev/null 2>&1 || true
  done
done
sleep 1
kill "$dump_pid"; wait "$dump_pid" 2>/dev/null || true
cp capture.pcap "$here/hostile-names.pcap"
cp ca.pem "$here/hostile-ca.pem"
echo "wrote $here/hostile-names.pcap and hostile-ca.pem"
