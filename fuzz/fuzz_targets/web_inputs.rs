//! What the web endpoint and outbound delivery parse from the network: an MTA-STS policy body and
//! `_mta-sts` TXT records (fetched from a remote domain's servers, RFC 8461), MX patterns matched
//! against host names, the Outlook autodiscover POX request body (any client) and the Host
//! header. Picked by the first byte.
#![no_main]

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tanba::delivery::mta_sts::{mx_matches, parse_policy, txt_id};
use tanba::http::autodiscover::parse_pox;
use tanba::http::autoconfig::request_host;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok((_, mx, max_age)) = parse_policy(rest) {
                assert!(mx.iter().all(|m| !m.is_empty()));
                let _ = max_age;
            }
        }
        1 => {
            // TXT answers: records separated by NUL.
            let records: Vec<Vec<u8>> = rest.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
            let _ = txt_id(&records);
        }
        2 => {
            let s = String::from_utf8_lossy(rest);
            let (pattern, host) = s.split_once('\n').unwrap_or((&s, "mx.example.kz"));
            let _ = mx_matches(pattern, host);
        }
        3 => {
            let _ = parse_pox(rest);
        }
        _ => {
            if let Ok(v) = HeaderValue::from_bytes(rest) {
                let mut h = HeaderMap::new();
                h.insert(header::HOST, v);
                if let Some(host) = request_host(&h) {
                    assert!(!host.is_empty() && host.len() <= 253);
                }
            }
        }
    }
});
