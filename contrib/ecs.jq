# pinwatch connection records (schema/connection.schema.json) in Elastic Common Schema field
# names, one ECS document per record, ready for Filebeat, Logstash or the _bulk API without an
# ingest pipeline of your own:
#
#   jq -c -f contrib/ecs.jq conns.jsonl > conns.ecs.jsonl
#   pinwatch live -i eth1 --connections - | jq -c --unbuffered -f /usr/share/pinwatch/ecs.jq
#
# ECS fields used: @timestamp, event.*, network.community_id / transport / type / vlan.id,
# source.* and destination.* (also as client.* / server.*), tls.* (version, cipher, ALPN,
# JA3/JA3S, server certificate as tls.server.x509 and hash), observer.name and
# observer.ingress.interface.name, log.file.path. pinwatch's own fields with no ECS equivalent
# (outcome detail, alert, close sequence, JA4, anomalies...) stay whole under `pinwatch`.
# ECS fields without a value are left out; the record under `pinwatch` is kept as it is. Checked by tests/join_keys.rs.

def tls_version_number: if . == null then null else (split(" ") | .[1]) end;
def ecs_outcome:
  if . == "established" then "success"
  elif . == "not_tls" or . == "midstream" or . == "incomplete" then "unknown"
  else "failure" end;
def endpoint($ip; $port; $bytes; $packets):
  {ip: $ip, port: $port, bytes: $bytes, packets: $packets};
def drop_nulls:
  walk(if type == "object" then with_entries(select(.value != null and .value != [] and .value != {})) else . end);

. as $r
| {
    "@timestamp": $r.ts_start,
    ecs: {version: "8.11.0"},
    event: {
      kind: "event",
      category: ["network"],
      type: ["connection"],
      dataset: "pinwatch.connection",
      module: "pinwatch",
      start: $r.ts_start,
      end: $r.ts_end,
      action: $r.outcome,
      outcome: ($r.outcome | ecs_outcome),
      reason: $r.outcome_detail
    },
    network: {
      community_id: $r.community_id,
      transport: "tcp",
      type: (if ($r.client_ip | contains(":")) then "ipv6" else "ipv4" end),
      protocol: (if $r.tls_version != null or $r.ja4 != null then "tls" else null end),
      vlan: (if ($r.vlan | length) > 0 then {id: ($r.vlan[0] | tostring)} else null end),
      bytes: ($r.client_bytes + $r.server_bytes),
      packets: ($r.client_packets + $r.server_packets)
    },
    source: endpoint($r.client_ip; $r.client_port; $r.client_bytes; $r.client_packets),
    destination: (endpoint($r.server_ip; $r.server_port; $r.server_bytes; $r.server_packets)
                  + {domain: ($r.sni // $r.connect.host)}),
    client: endpoint($r.client_ip; $r.client_port; $r.client_bytes; $r.client_packets),
    server: (endpoint($r.server_ip; $r.server_port; $r.server_bytes; $r.server_packets)
             + {domain: ($r.sni // $r.connect.host)}),
    tls: {
      version: ($r.tls_version | tls_version_number),
      version_protocol: (if $r.tls_version != null then "tls" else null end),
      cipher: $r.cipher,
      established: ($r.outcome == "established"),
      next_protocol: $r.alpn,
      client: {
        server_name: $r.sni,
        ja3: $r.ja3
      },
      server: {
        ja3s: $r.ja3s,
        hash: (if $r.cert != null then {sha256: ($r.cert.sha256 | ascii_upcase)} else null end),
        issuer: $r.cert.issuer,
        subject: $r.cert.subject,
        not_before: $r.cert.not_before,
        not_after: $r.cert.not_after,
        x509: (if $r.cert != null then {
          subject: {distinguished_name: $r.cert.subject},
          issuer: {distinguished_name: $r.cert.issuer},
          alternative_names: $r.cert.san,
          not_before: $r.cert.not_before,
          not_after: $r.cert.not_after
        } else null end)
      }
    },
    observer: {
      name: $r.sensor,
      type: "sensor",
      product: "pinwatch",
      ingress: (if $r.iface != null then {interface: {name: $r.iface}} else null end)
    },
    log: (if $r.file != null then {file: {path: $r.file}} else null end)
  }
| drop_nulls
| . + {pinwatch: $r}
