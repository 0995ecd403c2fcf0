//! Stapled OCSP responses (the TLS 1.2 CertificateStatus message): does one carry Signed
//! Certificate Timestamps? RFC 6962 (3.3) lets a CA deliver a leaf's SCTs in the OCSP response's
//! `singleExtensions` (extension 1.3.6.1.4.1.11129.2.4.5) instead of in the certificate; such a
//! leaf is publicly logged, which an interception proxy's minted leaves never are.
//!
//! Contract: takes the hostile DER bytes of an OCSPResponse (RFC 6960, 4.2.1) and answers yes
//! only when the SCT extension sits where the RFCs put it (a SingleResponse's extensions, or the
//! response's own extensions, which some responders use). DER is read with `asn1-rs` (through
//! `x509-parser`); the walk has a fixed depth and looks at no more than `MAX_RESPONSES` single
//! responses, so no input costs more than one linear pass. Signatures are not checked: the
//! certificate's own SCTs are not either, and a proxy that forges one forges the other.

use x509_parser::asn1_rs::{Any, Class, FromDer, Oid, Tag};

/// `id-pkix-ocsp-basic`.
const OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
/// The SCT list as an OCSP extension (RFC 6962, 3.3).
const OCSP_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.5";
/// Single responses looked at in one OCSP response (a stapled one has one).
const MAX_RESPONSES: usize = 16;
/// Extensions looked at in one extension list.
const MAX_EXTENSIONS: usize = 32;

/// The elements of a constructed DER value, in order, stopping at the first malformed one.
fn elements<'a>(outer: &Any<'a>) -> impl Iterator<Item = Any<'a>> {
    let mut rest = if outer.header.is_constructed() {
        outer.data
    } else {
        &[][..]
    };
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (next, any) = Any::from_der(rest).ok()?;
        rest = next;
        Some(any)
    })
}

fn is_context(any: &Any<'_>, tag: u32) -> bool {
    any.header.class() == Class::ContextSpecific && any.header.tag() == Tag(tag)
}

fn oid_is(any: &Any<'_>, dotted: &str) -> bool {
    any.header.tag() == Tag::Oid
        && Oid::try_from(any.clone()).is_ok_and(|oid| oid.to_id_string() == dotted)
}

/// `[n] EXPLICIT Extensions`: whether one of them is the SCT list.
fn extensions_have_sct(tagged: &Any<'_>) -> bool {
    elements(tagged).take(1).any(|list| {
        elements(&list).take(MAX_EXTENSIONS).any(|ext| {
            elements(&ext)
                .next()
                .is_some_and(|id| oid_is(&id, OCSP_SCT_LIST))
        })
    })
}

/// Whether a DER OCSPResponse carries an SCT list for the certificate it answers for.
pub fn has_sct(der: &[u8]) -> bool {
    let Ok((_, response)) = Any::from_der(der) else {
        return false;
    };
    // OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT ResponseBytes }
    let Some(bytes) = elements(&response).find(|e| is_context(e, 0)) else {
        return false;
    };
    // ResponseBytes ::= SEQUENCE { responseType OID, response OCTET STRING }
    let Some(response_bytes) = elements(&bytes).next() else {
        return false;
    };
    let mut parts = elements(&response_bytes);
    let (Some(kind), Some(octets)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !oid_is(&kind, OCSP_BASIC) || octets.header.tag() != Tag::OctetString {
        return false;
    }
    // BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, ... }
    let Ok((_, basic)) = Any::from_der(octets.data) else {
        return false;
    };
    let Some(tbs) = elements(&basic).next() else {
        return false;
    };
    // ResponseData ::= SEQUENCE { [0] version OPTIONAL, responderID, producedAt,
    //     responses SEQUENCE OF SingleResponse, [1] responseExtensions OPTIONAL }
    elements(&tbs).any(|field| {
        if is_context(&field, 1) {
            return extensions_have_sct(&field);
        }
        if field.header.class() != Class::Universal || field.header.tag() != Tag::Sequence {
            return false;
        }
        // SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate, [0] nextUpdate
        //     OPTIONAL, [1] singleExtensions OPTIONAL }
        elements(&field).take(MAX_RESPONSES).any(|single| {
            elements(&single).any(|part| is_context(&part, 1) && extensions_have_sct(&part))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::has_sct;

    #[test]
    fn garbage_and_truncations_carry_no_sct() {
        assert!(!has_sct(&[]));
        assert!(!has_sct(&[0x30, 0x80]));
        assert!(!has_sct(&[0x30, 0x03, 0x0a, 0x01, 0x00]));
        let deep = [0x30u8, 0x7f].repeat(64);
        assert!(!has_sct(&deep));
    }
}
