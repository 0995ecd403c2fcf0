//! Knowing the proxy's certificates: CAs given with `--proxy-ca`, issuers learned from the
//! traffic, and names of inspection products.

use std::collections::BTreeSet;

use x509_parser::extensions::ParsedExtension;

/// "Many unrelated registrable domains": several, not two.
pub const MANY_DOMAINS: usize = 4;

/// Words in an issuer name that name a TLS-inspection product, with the product.
const PRODUCTS: &[(&str, &str)] = &[
    ("zscaler", "Zscaler"),
    ("netskope", "Netskope"),
    ("umbrella", "Cisco Umbrella"),
    ("cisco", "Cisco"),
    ("palo alto", "Palo Alto Networks"),
    ("paloalto", "Palo Alto Networks"),
    ("fortinet", "Fortinet"),
    ("fortigate", "Fortinet"),
    ("check point", "Check Point"),
    ("checkpoint", "Check Point"),
    ("forcepoint", "Forcepoint"),
    ("websense", "Forcepoint"),
    ("sophos", "Sophos"),
    ("blue coat", "Blue Coat / Symantec"),
    ("bluecoat", "Blue Coat / Symantec"),
    ("symantec web", "Blue Coat / Symantec"),
    ("versa", "Versa"),
    ("mitmproxy", "mitmproxy"),
    ("squid", "Squid"),
    ("iboss", "iboss"),
    ("menlo", "Menlo Security"),
    ("mcafee web gateway", "McAfee Web Gateway"),
    ("skyhigh", "Skyhigh Security"),
    ("barracuda", "Barracuda"),
    ("sonicwall", "SonicWall"),
];

/// Issuer attributes that name an organisation or a CA. Locality, state and the like name
/// places, and places contain product words (`L=San Francisco` holds "cisco").
const NAMING_ATTRIBUTES: &[&str] = &["CN", "O", "OU"];

/// The product an issuer name points to, if any: a product name matched as whole words inside
/// the issuer's CN, O or OU values. `issuer` is the one-line form x509-parser writes
/// (`C=US, O=..., CN=...`); a value holding `, CN=` can only fake what its author could have
/// put in a real CN anyway.
pub fn known_product(issuer: &str) -> Option<&'static str> {
    let mut words = String::from(" ");
    for part in issuer.split(", ").flat_map(|rdn| rdn.split(" + ")) {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        if !NAMING_ATTRIBUTES.contains(&key.trim()) {
            continue;
        }
        for word in value
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            words.push_str(&word.to_ascii_lowercase());
            words.push(' ');
        }
        // A boundary between values, so words of two attributes never join into a product.
        words.push_str("| ");
    }
    PRODUCTS
        .iter()
        .find(|(product, _)| words.contains(&format!(" {product} ")))
        .map(|(_, p)| *p)
}

/// Whether an issuer looks like an interception CA by what its leaves show: it names an
/// inspection product or mints for many unrelated registrable domains, and none of its leaves
/// carries an embedded SCT (a public CA's do).
pub fn looks_minted(issuer: &str, registrable_domains: usize, no_sct: bool) -> bool {
    no_sct && (registrable_domains >= MANY_DOMAINS || known_product(issuer).is_some())
}

#[derive(Debug, Clone)]
struct ConfiguredCa {
    subject: String,
    key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaVerdict {
    Proxy,
    NotProxy,
}

/// The set of CAs whose leaves are proxy-minted.
#[derive(Debug, Clone, Default)]
pub struct ProxyCas {
    configured: Vec<ConfiguredCa>,
    /// `--not-proxy-ca`: an enterprise's own PKI, which looks like interception (many domains,
    /// no SCTs) but is not; never learned, never a proxy.
    not_proxy: Vec<ConfiguredCa>,
    learned: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
}

impl ProxyCas {
    /// Loads every certificate of a PEM file given with `--proxy-ca`.
    pub fn load_pem(&mut self, path: &str) -> Result<(), CaError> {
        let cas = read_cas(path)?;
        self.configured.extend(cas);
        Ok(())
    }

    /// Loads every certificate of a PEM file given with `--not-proxy-ca`.
    pub fn load_not_proxy_pem(&mut self, path: &str) -> Result<(), CaError> {
        let cas = read_cas(path)?;
        self.not_proxy.extend(cas);
        Ok(())
    }

    /// Whether `--not-proxy-ca` names this issuer.
    pub fn not_proxy_issuer(&self, issuer: &str) -> bool {
        self.not_proxy.iter().any(|c| c.subject == issuer)
    }

    pub fn configured_issuer(&self, issuer: &str) -> bool {
        self.configured.iter().any(|c| c.subject == issuer)
    }

    pub fn learn(&mut self, issuer: &str) {
        if !self.learned.contains(issuer) {
            self.learned.insert(issuer.to_string());
        }
    }

    /// Takes back what [`ProxyCas::learn`] learned (a configured CA stays).
    pub fn forget(&mut self, issuer: &str) {
        self.learned.remove(issuer);
    }

    /// Whether a leaf with this issuer (and authority key id) was minted by the proxy. A
    /// configured CA must match by name and, when both carry one, by key id.
    pub fn verdict(&self, issuer: &str, authority_key_id: Option<&str>) -> CaVerdict {
        let configured = self.configured.iter().any(|c| {
            c.subject == issuer
                && match (&c.key_id, authority_key_id) {
                    (Some(k), Some(a)) => k == a,
                    _ => true,
                }
        });
        if self.not_proxy_issuer(issuer) && !configured {
            CaVerdict::NotProxy
        } else if configured || self.learned.contains(issuer) {
            CaVerdict::Proxy
        } else {
            CaVerdict::NotProxy
        }
    }
}

/// Every certificate of a PEM file, by subject and key id.
fn read_cas(path: &str) -> Result<Vec<ConfiguredCa>, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Read {
        path: path.to_string(),
        source,
    })?;
    let cas: Vec<ConfiguredCa> = x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .flatten()
        .filter_map(|pem| {
            let cert = pem.parse_x509().ok()?;
            let key_id = cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => Some(hex::encode(k.0)),
                    _ => None,
                });
            Some(ConfiguredCa {
                subject: cert.subject().to_string(),
                key_id,
            })
        })
        .collect();
    if cas.is_empty() {
        return Err(CaError::NoCertificate {
            path: path.to_string(),
        });
    }
    Ok(cas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_recognised() {
        assert_eq!(
            known_product("CN=mitmproxy, O=mitmproxy"),
            Some("mitmproxy")
        );
        assert_eq!(
            known_product("CN=Zscaler Intermediate Root CA (zscalertwo.net)"),
            Some("Zscaler")
        );
        assert_eq!(
            known_product("CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1"),
            None
        );
        // Places and substrings are not products.
        assert_eq!(
            known_product(
                "C=US, ST=California, L=San Francisco, O=Example Widgets Inc, CN=Example Widgets Issuing CA"
            ),
            None
        );
        assert_eq!(
            known_product("O=Universal Versatile Trust, CN=Menloway CA"),
            None
        );
        assert_eq!(known_product("O=Palo, OU=Alto, CN=x"), None);
        assert_eq!(
            known_product("C=US, O=Palo Alto Networks, CN=Forward Trust"),
            Some("Palo Alto Networks")
        );
        assert_eq!(
            known_product("OU=Cisco Umbrella, CN=x"),
            Some("Cisco Umbrella")
        );
    }

    #[test]
    fn configured_ca_from_pem_matches_its_leaves_only() {
        let mut cas = ProxyCas::default();
        let pem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/captures/certs/mitmproxy-ca.pem"
        );
        cas.load_pem(pem).unwrap();
        assert_eq!(
            cas.verdict("CN=mitmproxy, O=mitmproxy", None),
            CaVerdict::Proxy
        );
        assert_eq!(
            cas.verdict("CN=Pinwatch Test Origin CA", None),
            CaVerdict::NotProxy
        );
        assert!(
            cas.load_pem(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
                .is_err()
        );
    }
}
