//! CMS / ASN.1 / X.509 / CRL / OCSP / TSP parsers (src/filter/{asn1,cms,cert,crl,ocsp,tsp}.rs).
//! The first byte picks the parser, the rest is its input; the last mode runs the whole CMS
//! verification (signers, algorithms, chain to the test anchors, revocation material).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tanba::filter::{asn1, cert, cms, crl, ocsp, revocation, tsp};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let filter = tanba_fuzz::filter_with_test_anchors();
    match mode % 8 {
        0 => {
            if let Ok(tlvs) = asn1::read_all(input) {
                for t in &tlvs {
                    walk(t, 0);
                }
            }
            if let Ok(der) = asn1::ber_to_der(input) {
                // BER → DER is idempotent on its own output.
                if let Ok(again) = asn1::ber_to_der(&der) {
                    assert_eq!(again, der, "ber_to_der is not idempotent");
                }
                let _ = asn1::parse_one(&der);
            }
        }
        1 => {
            if let Ok(sd) = cms::parse(input) {
                let _ = revocation::Material::from_signed_data(&sd);
            }
            let _ = cms::sniff(input);
        }
        2 => {
            if let Ok(c) = cert::Cert::from_der(input) {
                let _ = c.subject_string();
                let _ = c.issuer_string();
                let _ = c.display_name();
                let _ = c.is_self_issued();
                let _ = tanba::filter::nca::profile(&c);
                let _ = tanba::filter::nca::key_use(&c);
                let _ = revocation::locations(&c);
                let _ = ocsp::public_key_bits(&c);
                let _ = c.signed_with(&c.spki);
                for anchor in filter.trust().certs() {
                    let _ = c.signed_with(&anchor.spki);
                }
            }
            let _ = cert::certs_from_pem_or_der(input);
        }
        3 => {
            if let Ok(crls) = crl::Crl::parse_any(input) {
                for c in &crls {
                    let _ = c.issuer_string();
                    let _ = c.is_delta();
                    let _ = c.covers(1_685_577_600);
                    let _ = c.entries().take(1000).count();
                    let _ = c.lookup(&[1, 2, 3]);
                    for anchor in filter.trust().certs() {
                        let _ = c.verify_signature(anchor);
                        let _ = c.scope_includes(anchor);
                    }
                }
            }
            let _ = crl::distribution_point_uris(input);
        }
        4 => {
            for r in [ocsp::parse_any(input), ocsp::parse_response(input)]
                .into_iter()
                .flatten()
            {
                let _ = r.responder_name();
                let _ = r.nonce_matches(b"nonce");
                for anchor in filter.trust().certs() {
                    let _ = r.verify(anchor);
                    let _ = r.find(anchor, anchor);
                }
            }
        }
        5 => {
            for t in [tsp::parse_token(input), tsp::parse_response(input)]
                .into_iter()
                .flatten()
            {
                let _ = t.check_imprint(b"signature");
                let _ = t.verify(filter.trust(), &tanba::filter::chain::NoRevocation);
            }
        }
        _ => {
            // The whole verification of a bare CMS file, attached or with detached content.
            let (content, cms_bytes) = match input.split_first() {
                Some((&n, rest)) if n & 1 == 1 => {
                    let cut = (n as usize >> 1).min(rest.len());
                    (Some(("content", &rest[..cut])), &rest[cut..])
                }
                Some((_, rest)) => (None, rest),
                None => (None, input),
            };
            let report = filter.verify_cms(cms_bytes, Some("x.p7s"), content, tanba_fuzz::now());
            let _ = filter.stamp(b"Subject: x\r\n\r\nbody\r\n", &report);
        }
    }
});

fn walk(t: &asn1::Tlv<'_>, depth: usize) {
    if depth > asn1::MAX_DEPTH {
        return;
    }
    let _ = asn1::read_oid(t);
    let _ = asn1::read_time(t);
    let _ = asn1::small_uint(t);
    if t.is_constructed() {
        if let Ok(children) = t.children() {
            for c in &children {
                walk(c, depth + 1);
            }
        }
    }
}
