// Node `https` client for scripts/captures/generalise.py.
// usage: node nodeclient.js HOST CAFILE TLS(1.2|1.3|any) PIN(base64 SHA-256 of the leaf SPKI, or -)
// With a PIN, checkServerIdentity runs the usual name check, then compares the leaf's key hash:
// the pinning recipe of Node's own documentation. Direct connections only (transparent proxy).
'use strict';
const https = require('https');
const tls = require('tls');
const crypto = require('crypto');
const fs = require('fs');
const [host, cafile, ver, pin] = process.argv.slice(2);
const opts = { host, port: 443, path: '/', servername: host, ca: fs.readFileSync(cafile), agent: false };
if (ver === '1.2') { opts.minVersion = 'TLSv1.2'; opts.maxVersion = 'TLSv1.2'; }
if (ver === '1.3') { opts.minVersion = 'TLSv1.3'; }
if (pin && pin !== '-') {
  opts.checkServerIdentity = (name, cert) => {
    const err = tls.checkServerIdentity(name, cert);
    if (err) return err;
    const spki = crypto.createPublicKey(cert.pubkey ? { key: cert.pubkey, format: 'der', type: 'spki' } : cert.raw)
      .export({ type: 'spki', format: 'der' });
    const got = crypto.createHash('sha256').update(spki).digest('base64');
    if (got !== pin) return new Error(`public key pin mismatch: ${got}`);
    return undefined;
  };
}
setTimeout(() => { console.log('timeout'); process.exit(3); }, 8000).unref();
const req = https.get(opts, (res) => {
  console.log('status', res.statusCode);
  res.resume();
  res.on('end', () => process.exit(0));
});
req.on('error', (e) => { console.log('error:', e.code || e.message); process.exit(1); });
