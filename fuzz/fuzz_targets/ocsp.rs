//! A stapled OCSP response's DER, as the CertificateStatus message hands it over: whether it
//! carries SCTs must be answered for any bytes, without panicking, in one linear pass.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = pinwatch::tls::ocsp::has_sct(data);
    // A pure function of the bytes.
    assert_eq!(first, pinwatch::tls::ocsp::has_sct(data));
});
