//! Signature filter speed: `cargo bench --bench filter` (release). Prints ms per message for the
//! whole `Filter::process` (MIME guard, find, verify, stamp) as the server runs it:
//!
//! * the filter built from a config whose `signatures.trust_dir` holds the NCA RK test roots
//!   (`Filter::new`, as `tanba serve` does; bench only);
//! * each message as the server hands it to the filter: with its `Received:` header on top;
//! * the real NCA RK test samples (RSA, and RSA + GOST-2015-512) attached as `.p7s`, next to an
//!   unsigned message of exactly the same size and shape, so that the difference is what a
//!   signature costs;
//! * the first message (cold: the process-wide caches of parsed keys and verified certificate
//!   signatures are empty, as after a start) and then the steady state, on one thread and on
//!   two threads at once (the server runs the filter on its blocking pool, one task per
//!   delivery, on this 2-core machine).
//!
//! The validation time is the sample's signing day, so the verdicts are `pass` (RSA) and `fail`
//! (RSA + GOST: the RSA certificate had expired by the GOST signature's day), after the same work.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use tanba::config::Config;
use tanba::filter::Filter;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/");

fn b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

/// The Received header the server puts on top before the filter runs.
const RECEIVED: &str =
    "Received: from sender.example ([127.0.0.1])\r\n\tby mx.bench (Tanba) with ESMTP \
id 0192A3B4C5D6E7F8\r\n\tfor <bench@example.test>; Fri, 27 Nov 2026 12:00:00 +0000\r\n";

/// A message like benches/smtp_signed.py sends: a text part and one base64 attachment.
fn message(name: &str, ctype: &str, data: &[u8], pad: usize) -> Vec<u8> {
    format!(
        "{RECEIVED}From: ext@example.kz\r\nTo: bench@example.test\r\nSubject: contract\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n\
--BOUNDARY\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nContract attached.{}\r\n\
--BOUNDARY\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
Content-Disposition: attachment; filename=\"{name}\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}--BOUNDARY--\r\n",
        " ".repeat(pad),
        b64(data)
    )
    .into_bytes()
}

/// (signed, unsigned) messages of the same size for a CMS sample.
fn pair(cms_file: &str) -> (Vec<u8>, Vec<u8>) {
    let cms = std::fs::read(format!("{DATA}cms/{cms_file}")).unwrap();
    let signed = message("contract.p7s", "application/pkcs7-signature", &cms, 0);
    let pdf: Vec<u8> = (0..cms.len()).map(|i| (i * 7 % 251) as u8).collect();
    let short = message("contract.pdf", "application/pdf", &pdf, 0);
    let unsigned = message(
        "contract.pdf",
        "application/pdf",
        &pdf,
        signed.len() - short.len(),
    );
    assert_eq!(signed.len(), unsigned.len());
    (signed, unsigned)
}

/// Mean time per message over `n` messages on each of `threads` threads at once.
fn run(filter: &Filter, msg: &[u8], at: SystemTime, threads: usize, n: u32) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n {
                    std::hint::black_box(filter.process(std::hint::black_box(msg), at));
                }
            });
        }
    });
    start.elapsed() / (n * threads as u32)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let trust = format!("{DATA}ca");
    let config = Config::from_toml(
        &format!("[server]\nhostname = \"mx.bench\"\n[signatures]\ntrust_dir = \"{trust}\"\n"),
        None,
    )
    .unwrap();
    let filter = Filter::new(&config).unwrap();
    let rsa_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_622_505_600); // 2021-06-01
    let gost_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_664_323_200); // 2022-09-28
    let cases = [
        (
            "NCA RSA (1 signer)",
            "ncanode_attached_1signer_rsa.p7s",
            rsa_time,
            "pass",
        ),
        (
            "NCA RSA + GOST-2015-512 (2 signers)",
            "ncanode_attached_2signers_rsa+gost2015.p7s",
            gost_time,
            "fail",
        ),
    ];
    println!(
        "{:<38} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "message", "bytes", "cold ms", "1 thread", "2 threads", "+ vs plain"
    );
    for (name, file, at, verdict) in cases {
        let (signed, unsigned) = pair(file);
        let start = Instant::now();
        let p = filter.process(&signed, at);
        let cold = start.elapsed();
        assert_eq!(p.verdict, verdict, "{name}");
        assert_eq!(filter.process(&unsigned, at).verdict, "none");
        let plain1 = run(&filter, &unsigned, at, 1, 2000);
        let plain2 = run(&filter, &unsigned, at, 2, 1000);
        let one = run(&filter, &signed, at, 1, 300);
        let two = run(&filter, &signed, at, 2, 150);
        println!(
            "{:<38} {:>6} {:>10} {:>10.3} {:>10.3} {:>+10.3}",
            "  unsigned, same size",
            unsigned.len(),
            "",
            ms(plain1),
            ms(plain2),
            0.0
        );
        println!(
            "{:<38} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>+10.3}",
            name,
            signed.len(),
            ms(cold),
            ms(one),
            ms(two),
            ms(one) - ms(plain1)
        );
    }
    let s = tanba::filter::cache::stats();
    println!(
        "\ncache: {} certificate signatures from the cache, {} verified; {} keys from the cache, {} parsed; \
         {} certificates from the cache, {} parsed",
        s.verified_hits, s.verified_misses, s.key_hits, s.key_misses, s.cert_hits, s.cert_misses
    );
}
