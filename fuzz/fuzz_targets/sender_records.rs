//! What the sender checks (src/senderauth/) parse from the network, without DNS: the message's
//! DKIM-Signature / ARC-* headers and body hashes (mail-auth's `AuthenticatedMessage::parse`,
//! run on every MX message before any lookup), and the TXT records DNS answers carry (SPF, DMARC,
//! DKIM keys), picked by the first byte. Also our Authentication-Results value quoting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{dmarc::Dmarc, spf::Spf, AuthenticatedMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Some(m) = AuthenticatedMessage::parse(rest) {
                assert!(m.body_offset as usize <= rest.len());
                let _ = (m.dkim_headers.len(), m.ams_headers.len(), m.as_headers.len());
            }
        }
        1 => {
            let _ = Spf::parse(rest);
        }
        2 => {
            let _ = Dmarc::parse(rest);
        }
        _ => {
            let _ = DomainKey::parse(rest);
        }
    }
    // An address as it goes into `smtp.mailfrom=` / `header.from=`: one token, no CR/LF.
    let s = String::from_utf8_lossy(rest);
    let v = tanba::senderauth::ar_addr(&s);
    assert!(!v.contains('\r') && !v.contains('\n'), "{v:?}");
});
