//! Modified UTF-7 mailbox names (src/imap/utf7.rs, RFC 3501 §5.1.3): decoding arbitrary bytes,
//! and the round trips decode(encode(s)) == s and encode(decode(w)) decoding to the same name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tanba::imap::utf7;

fuzz_target!(|data: &[u8]| {
    if let Some(name) = utf7::decode(data) {
        let wire = utf7::encode(&name);
        assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{wire:?}");
        assert_eq!(
            utf7::decode(wire.as_bytes()).as_deref(),
            Some(name.as_str())
        );
        // Printable ASCII other than "&" stands for itself.
        if data
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b'&')
        {
            assert_eq!(name.as_bytes(), data);
        }
    }
    let s = String::from_utf8_lossy(data);
    let wire = utf7::encode(&s);
    assert!(wire.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{wire:?}");
    assert_eq!(
        utf7::decode(wire.as_bytes()).as_deref(),
        Some(&*s),
        "{wire:?}"
    );
});
