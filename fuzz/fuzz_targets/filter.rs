//! The whole signature filter on arbitrary message bytes, as `inbound::accept` runs it: an empty
//! trust directory (what a fresh server has), verification of every signature found by the MIME
//! walk, then the stamp. `Filter::process` catches panics (the message is then stamped
//! permerror); under libFuzzer a panic aborts anyway, and we also call the verification without
//! that guard (it checks `mime_guard` itself, as `process` does). The IMAP side's parsers of
//! stored messages run on the same bytes: the MIME structure (BODYSTRUCTURE, sections) with its
//! cache encoding, the envelope, and the texts SEARCH BODY/TEXT look in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tanba::imap::mime;

fuzz_target!(|raw: &[u8]| {
    tanba_fuzz::tolerate_caught_panics();
    let _ = tanba::mime_guard::scan(raw);
    let filter = tanba_fuzz::filter_empty_trust();
    let now = tanba_fuzz::now();
    let report = filter.verify_message(raw, now);
    let stamped = filter.stamp(raw, &report);
    let processed = filter.process(raw, now);
    assert_eq!(processed.message, stamped);
    assert_eq!(processed.verdict, report.verdict.as_str());

    let cached = mime::parse(raw);
    let enc = cached.encode();
    assert_eq!(
        mime::Cached::decode(&enc).as_ref(),
        Some(&cached),
        "MIME cache does not round-trip"
    );
    let _ = mime::parse(&stamped);
    let _ = tanba::imap::search::body_texts(raw);
});
