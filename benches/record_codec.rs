//! Store record encoding: JSON (store format 1) against MessagePack with structs as arrays
//! (format 2, `src/store/mod.rs` `enc`/`dec`), for the record IMAP reads most, `MessageMeta`.
//! `cargo bench --bench record_codec`; figures in docs/benchmarks.md ("Store records").

use std::hint::black_box;
use std::time::Instant;

use tanba::store::MessageMeta;

const N: usize = 300_000;

fn meta(i: u32) -> MessageMeta {
    MessageMeta {
        uid: 1000 + i,
        blob_id: 0x1_0000_0000 + i as u64,
        size: 4_000 + i as u64 % 70_000,
        internal_date: 1_764_000_000 + i as i64,
        flags: match i % 3 {
            0 => vec![],
            1 => vec!["\\Seen".into()],
            _ => vec!["\\Seen".into(), "\\Answered".into(), "$EDSValid".into()],
        },
        modseq: 5_000 + i as u64,
    }
}

fn run(name: &str, enc: impl Fn(&MessageMeta) -> Vec<u8>, dec: impl Fn(&[u8]) -> MessageMeta) {
    let metas: Vec<MessageMeta> = (0..N as u32).map(meta).collect();
    let t = Instant::now();
    let encoded: Vec<Vec<u8>> = metas.iter().map(|m| black_box(enc(m))).collect();
    let e = t.elapsed();
    let bytes: usize = encoded.iter().map(|b| b.len()).sum();
    let t = Instant::now();
    for b in &encoded {
        black_box(dec(b));
    }
    let d = t.elapsed();
    println!(
        "{name:<26} {:>6.0} ns encode  {:>6.0} ns decode  {:>5.1} bytes per record",
        e.as_nanos() as f64 / N as f64,
        d.as_nanos() as f64 / N as f64,
        bytes as f64 / N as f64
    );
}

fn main() {
    for _ in 0..2 {
        run(
            "JSON (serde_json)",
            |m| serde_json::to_vec(m).unwrap(),
            |b| serde_json::from_slice(b).unwrap(),
        );
        run(
            "MessagePack (rmp-serde)",
            |m| rmp_serde::to_vec(m).unwrap(),
            |b| rmp_serde::from_slice(b).unwrap(),
        );
    }
}
