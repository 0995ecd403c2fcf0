// Small TLS client used by scripts/make-captures (Node `tls`).
// usage: node tlsclient.js HOST PORT CAFILE TLS(1.2|1.3|any) [PROXYHOST:PORT]
// Connects (through an explicit proxy with CONNECT when given), handshakes with
// SNI=HOST trusting only CAFILE, sends one GET on success.
'use strict';
const tls = require('tls');
const net = require('net');
const fs = require('fs');
const [host, portS, cafile, ver, proxy] = process.argv.slice(2);
const port = parseInt(portS, 10);
const opts = { servername: host, ca: fs.readFileSync(cafile), ALPNProtocols: ['http/1.1'] };
if (ver === '1.2') { opts.minVersion = 'TLSv1.2'; opts.maxVersion = 'TLSv1.2'; }
if (ver === '1.3') { opts.minVersion = 'TLSv1.3'; }
setTimeout(() => { console.log('timeout'); process.exit(3); }, 8000).unref();

function startTls(sock) {
  const o = Object.assign({}, opts);
  if (sock) o.socket = sock; else { o.host = host; o.port = port; }
  const s = tls.connect(o, () => {
    console.log('handshake ok', s.getProtocol());
    s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: pinwatch-nodeclient\r\nConnection: close\r\n\r\n`);
  });
  let got = '';
  s.on('data', (d) => { got += d.toString(); });
  s.on('end', () => { console.log('response:', got.split('\r\n')[0]); process.exit(0); });
  s.on('error', (e) => { console.log('tls error:', e.code || e.message); process.exit(1); });
}

if (proxy) {
  const [ph, pp] = proxy.split(':');
  const c = net.connect({ host: ph, port: parseInt(pp, 10) }, () => {
    c.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  });
  let buf = '';
  const onData = (d) => {
    buf += d.toString('latin1');
    if (buf.includes('\r\n\r\n')) {
      c.removeListener('data', onData);
      if (!/^HTTP\/1\.[01] 200/.test(buf)) { console.log('proxy refused:', buf.split('\r\n')[0]); process.exit(2); }
      startTls(c);
    }
  };
  c.on('data', onData);
  c.on('error', (e) => { console.log('proxy error:', e.code); process.exit(2); });
} else {
  startTls(null);
}
