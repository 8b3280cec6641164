//! RFC 2047 encoded words both ways: the decoder SEARCH uses (`imap::search::decode_words`) on
//! arbitrary bytes, and the encoder of the stamp headers (`filter::stamp::encoded_words`,
//! `filter::stamp::render`, which put certificate names and file names into headers) with
//! round-trip and header-injection properties.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tanba::filter::stamp;
use tanba::imap::search::decode_words;

fuzz_target!(|data: &[u8]| {
    let _ = decode_words(data);
    let Some((&room, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);

    // encoded_words: short ASCII words (RFC 2047 §2: at most 75 characters) that decode back.
    let words = stamp::encoded_words(&text, room as usize);
    for w in &words {
        assert!(w.len() <= 75, "encoded word longer than 75: {w}");
        assert!(w.bytes().all(|b| b.is_ascii_graphic()), "{w:?}");
    }
    assert_eq!(decode_words(words.join(" ").as_bytes()), text);
    assert_eq!(
        decode_words(words.join("\r\n ").replace("\r\n", "").as_bytes()),
        text
    );

    // render: one header field whose only line breaks are folds (CRLF + space), with lines of
    // at most 998 octets (RFC 5322 §2.1.1), and whose unfolded value decodes back to the value.
    let field = stamp::render("X-EDS-Signer", &text, "\r\n");
    let body = field.strip_suffix("\r\n").expect("field ends with CRLF");
    for (i, line) in body.split("\r\n").enumerate() {
        assert!(!line.contains(['\r', '\n']), "bare CR/LF in {field:?}");
        assert!(line.len() <= 998, "line longer than 998 octets");
        if i > 0 {
            assert!(
                line.starts_with(' '),
                "continuation line without WSP: {field:?}"
            );
        }
    }
    let unfolded = body.replace("\r\n", "");
    let value = unfolded.strip_prefix("X-EDS-Signer:").expect("name");
    // The value follows "Name:" after one space (a leading space of the value is that space).
    let expected = match text.strip_prefix(' ').unwrap_or(&text) {
        "" if text.is_empty() => String::new(),
        v => format!(" {v}"),
    };
    assert_eq!(decode_words(value.as_bytes()), expected, "{field:?}");
});
