//! An authoritative DNS server on 127.0.0.1 (UDP, Python dnslib) for the tests that resolve:
//! delivery (MX, A, DKIM TXT) and senderauth (SPF, DKIM, DMARC, DNSBL, SERVFAIL).

use std::process::Child;

use super::spawn_python_server;

/// Answers from a zone text (argv 1) and a JSON list of names that fail every query with
/// SERVFAIL (argv 2); names it does not know get NXDOMAIN, known names without the asked type
/// an empty answer (NODATA).
const PY_DNS: &str = r#"
import sys, socket, threading, os, json
from dnslib import DNSRecord, RR, QTYPE, RCODE
zone = RR.fromZone(sys.argv[1]) if sys.argv[1].strip() else []
servfail = set(n.lower().rstrip('.') for n in json.loads(sys.argv[2]))
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(65535)
    try:
        q = DNSRecord.parse(data)
    except Exception:
        continue
    a = q.reply()
    if str(q.q.qname).rstrip('.').lower() in servfail:
        a.header.rcode = RCODE.SERVFAIL
        s.sendto(a.pack(), addr)
        continue
    known = False
    for rr in zone:
        if rr.rname == q.q.qname:
            known = True
            if rr.rtype == q.q.qtype or q.q.qtype == QTYPE.ANY:
                a.add_answer(rr)
    if not known:
        a.header.rcode = RCODE.NXDOMAIN
    s.sendto(a.pack(), addr)
"#;

/// The server process (killed on drop; it also exits when its stdin closes) and its port.
pub struct Dns {
    child: Child,
    pub port: u16,
}

impl Dns {
    /// Serving the records of `zone` (zone-file lines, absolute names); the names in
    /// `servfail` fail every query.
    pub fn start(zone: &str, servfail: &[&str]) -> Dns {
        let servfail = serde_json::to_string(servfail).unwrap();
        let (child, port) = spawn_python_server(PY_DNS, [zone, servfail.as_str()]);
        Dns { child, port }
    }

    /// Serving `(name, type, value)` records: `TXT` (split into strings of 255 bytes), `A`, or
    /// `SERVFAIL` (every query for the name fails; no value).
    pub fn records(records: &[(&str, &str, &str)]) -> Dns {
        let mut zone = String::new();
        let mut servfail = Vec::new();
        for &(name, typ, value) in records {
            match typ {
                "TXT" => {
                    assert!(!value.contains(['"', '\\']), "{value}");
                    let strings: Vec<String> = value
                        .as_bytes()
                        .chunks(255)
                        .map(|c| format!("\"{}\"", std::str::from_utf8(c).unwrap()))
                        .collect();
                    zone.push_str(&format!("{name}. 60 IN TXT {}\n", strings.join(" ")));
                }
                "A" => zone.push_str(&format!("{name}. 60 IN A {value}\n")),
                "SERVFAIL" => servfail.push(name),
                _ => panic!("record type {typ}"),
            }
        }
        Dns::start(&zone, &servfail)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
