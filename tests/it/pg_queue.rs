//! The outbound queue, aliases and greylisting on PostgreSQL (issue 17, docs/cluster.md,
//! "Outbound queue: leases"), against a real throw-away PostgreSQL (`support::pg`): delivery to a
//! loopback receiver, bounces, `tanba queue list` and the queue metrics, `tanba alias`, and two
//! `tanba serve` nodes on one database (each message delivered once; a killed node's lease
//! taken over; a greylisted retry passing on the other node).

use std::process::Child;

use crate::delivery::{message, queue_json, queue_text, received, receiver, submit};
use crate::smtp::Client;
use crate::support::pg::Postgres;
use crate::support::*;

/// The lease length the nodes of these tests use (`TANBA_QUEUE_LEASE_SECS`, seconds).
const LEASE: &str = "2";

/// A `tanba serve` on database `db` of `pg`, with `extra` lines per section (as
/// [`TestServer::start_with`]) and the short lease.
fn node(pg: &Postgres, db: &str, extra: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let toml = crate::support::pg::server_toml(dir.path(), &pg.url(db), extra);
    TestServer::start_toml_env(dir, &toml, &[("TANBA_QUEUE_LEASE_SECS", LEASE)])
}

/// A node delivering everything to the relay on loopback `port`, retrying every second.
fn relaying_node(pg: &Postgres, db: &str, port: u16) -> TestServer {
    node(
        pg,
        db,
        &[
            ("delivery", &format!("relay = \"127.0.0.1:{port}\"")),
            ("delivery", "retry = [\"1s\"]"),
        ],
    )
}

/// A receiver (Python stdlib, threads) that saves each message as `N.eml` in `dir`. With
/// `stall`, the first message's DATA is never answered (the connection is held open) and a
/// file `stalled` says it arrived; later connections are served normally.
const PY_RECORDER: &str = r#"
import os, socket, sys, threading, time
port, outdir, stall = int(sys.argv[1]), sys.argv[2], sys.argv[3] == '1'
lock = threading.Lock()
def serve(c):
    f = c.makefile('rb')
    def say(s):
        c.sendall((s + '\r\n').encode())
    say('220 rec.test ESMTP')
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.strip().upper()
        if cmd.startswith(b'EHLO') or cmd.startswith(b'HELO'):
            say('250 rec.test')
        elif cmd.startswith(b'MAIL') or cmd.startswith(b'RCPT') or cmd.startswith(b'RSET') or cmd.startswith(b'NOOP'):
            say('250 ok')
        elif cmd == b'DATA':
            say('354 go')
            data = b''
            while True:
                l = f.readline()
                if not l or l == b'.\r\n':
                    break
                data += l
            with lock:
                marker = os.path.join(outdir, 'stalled')
                if stall and not os.path.exists(marker):
                    open(marker, 'w').close()
                    hold = True
                else:
                    hold = False
                    n = len([x for x in os.listdir(outdir) if x.endswith('.eml')])
                    tmp = os.path.join(outdir, '%d.tmp' % n)
                    open(tmp, 'wb').write(data)
                    os.rename(tmp, os.path.join(outdir, '%d.eml' % n))
            if hold:
                time.sleep(3600)
                return
            say('250 saved')
        elif cmd == b'QUIT':
            say('221 bye')
            return
        else:
            say('500 what')
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port))
s.listen(16)
print(s.getsockname()[1], flush=True)
def accept():
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"#;

/// A [`PY_RECORDER`] process and its directory; killed on drop.
struct Recorder {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Recorder {
    fn start(port: u16, stall: bool) -> Recorder {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn_python_server(
            PY_RECORDER,
            [
                port.to_string(),
                dir.path().to_str().unwrap().to_string(),
                if stall { "1" } else { "0" }.to_string(),
            ],
        );
        Recorder { child, dir, port }
    }

    /// The Message-ID lines of the messages saved so far.
    fn message_ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in 0.. {
            let Ok(m) = std::fs::read(self.dir.path().join(format!("{n}.eml"))) else {
                break;
            };
            let s = String::from_utf8_lossy(&m).into_owned();
            let id = s
                .lines()
                .find(|l| l.starts_with("Message-ID:"))
                .unwrap_or("(none)")
                .to_string();
            out.push(id);
        }
        out
    }

    fn stalled(&self) -> bool {
        self.dir.path().join("stalled").exists()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RCPT TO `to` over MX from a remote sender: the reply line.
fn mx_rcpt(srv: &TestServer, from: &str, to: &str) -> String {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok(&format!("MAIL FROM:<{from}>"), "250");
    let r = c.cmd(&format!("RCPT TO:<{to}>")).line();
    c.ok("QUIT", "221");
    r
}

fn rows(pg: &Postgres, db: &str, table: &str) -> String {
    pg.query(db, &format!("SELECT count(*) FROM {table}"))
}

/// Waits until the one queued message (Message-ID `<id@example.test>`) reached `rec`, sent by
/// `srv`, and the queue table of `db` is empty; then checks it arrived exactly once.
fn delivered_once(rec: &Recorder, pg: &Postgres, db: &str, srv: &TestServer, id: &str) {
    wait_for("the message at the receiver", srv, || {
        (!rec.message_ids().is_empty()).then_some(())
    });
    wait_for("an empty queue table", srv, || {
        (rows(pg, db, "queue") == "0").then_some(())
    });
    assert_eq!(
        rec.message_ids(),
        vec![format!("Message-ID: <{id}@example.test>")]
    );
}

/// `tanba alias add|list|del` write the `aliases` table and MX resolves through it on
/// PostgreSQL: an alias to one and to two accounts, sub-addressing, a domain alias, a refused
/// loop; after `alias del` the address is unknown again.
#[test]
fn pg_aliases_resolve_on_postgres() {
    let pg = Postgres::start();
    pg.create_db("al");
    let srv = node(&pg, "al", &[]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob-1");
    assert_eq!(
        mx_rcpt(&srv, "s@remote.example", "info@example.test")[..3],
        *"550"
    );
    stdout_ok(&srv.tanba(
        &["alias", "add", "info@example.test", "alice@example.test"],
        None,
    ));
    stdout_ok(&srv.tanba(
        &[
            "alias",
            "add",
            "Team@Example.test",
            "alice@example.test",
            "bob@example.test",
        ],
        None,
    ));
    let list = stdout_ok(&srv.tanba(&["alias", "list"], None));
    assert!(
        list.contains("team@example.test\talice@example.test bob@example.test"),
        "{list}"
    );
    assert!(
        list.contains("info@example.test\talice@example.test"),
        "{list}"
    );
    assert_eq!(
        pg.query(
            "al",
            "SELECT string_agg(address, ' ' ORDER BY address) FROM aliases"
        ),
        "info@example.test team@example.test"
    );
    for to in [
        "info@example.test",
        "team@example.test",
        "info+tag@example.test",
    ] {
        let r = mx_rcpt(&srv, "s@remote.example", to);
        assert!(r.starts_with("250"), "{to}: {r}");
    }
    // An alias loop is refused (resolution walks the stored table).
    stdout_ok(&srv.tanba(
        &["alias", "add", "a@example.test", "info@example.test"],
        None,
    ));
    let out = srv.tanba(
        &["alias", "add", "info@example.test", "a@example.test"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("would make a loop"), "{e}");
    stdout_ok(&srv.tanba(&["alias", "del", "a@example.test"], None));
    stdout_ok(&srv.tanba(&["alias", "del", "info@example.test"], None));
    assert_eq!(
        mx_rcpt(&srv, "s@remote.example", "info@example.test")[..3],
        *"550"
    );
    assert_eq!(rows(&pg, "al", "aliases"), "1");
}

/// Greylisting with two nodes on one database: a triplet deferred by node A passes on node B
/// once the delay has passed (node B never saw it), because the table is shared.
#[test]
fn pg_greylist_retry_passes_on_the_other_node() {
    let pg = Postgres::start();
    pg.create_db("gl");
    let greylisting_node = |pg: &Postgres| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("trust")).unwrap();
        let mut toml = base_toml(dir.path());
        // The base config's [auth] section gets the greylisting keys.
        toml = toml.replace(
            "[auth]\n",
            "[auth]\ngreylisting = true\ngreylist_delay = \"1s\"\ngreylist_expire = \"1h\"\n\
             greylist_max_entries = 3\n",
        );
        toml.push_str(&format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
            pg.url("gl")
        ));
        TestServer::start_toml(dir, &toml)
    };
    let a = greylisting_node(&pg);
    let b = greylisting_node(&pg);
    a.add_user("alice@example.test", "secret-alice");
    let r = mx_rcpt(&a, "news@sender.example", "alice@example.test");
    assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    assert_eq!(rows(&pg, "gl", "greylist WHERE NOT passed"), "1");
    // Past the delay (whole seconds, counted from the first attempt).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = mx_rcpt(&b, "news@sender.example", "alice@example.test");
    assert!(r.starts_with("250"), "node B: {r}");
    assert_eq!(rows(&pg, "gl", "greylist WHERE passed"), "1");
    // And it stays passed on node A.
    let r = mx_rcpt(&a, "news@sender.example", "alice@example.test");
    assert!(r.starts_with("250"), "node A: {r}");
    assert_eq!(rows(&pg, "gl", "greylist"), "1");
    // Bounded (greylist_max_entries = 3): new triplets on either node push out the pending
    // ones that expire first, never the passed one.
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = mx_rcpt(node, &format!("s{i}@sender.example"), "alice@example.test");
        assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    }
    assert_eq!(rows(&pg, "gl", "greylist"), "3");
    assert_eq!(rows(&pg, "gl", "greylist WHERE passed"), "1");
    let r = mx_rcpt(&b, "news@sender.example", "alice@example.test");
    assert!(r.starts_with("250"), "still passed: {r}");
}

/// A message for a remote recipient, submitted on PostgreSQL while the relay is down, is
/// queued (`tanba queue list`, the queue metrics); once the receiver is up it is delivered
/// there, and its queue row and its body's blob are gone. A refused recipient bounces: the
/// DSN lands in the sender's INBOX.
#[test]
fn pg_queue_delivers_lists_and_bounces() {
    let pg = Postgres::start();
    pg.create_db("q");
    let closed = closed_port();
    let srv = relaying_node(&pg, "q", closed.port);
    srv.add_user("alice@example.test", "secret-alice");
    submit(&srv, &["rcpt@b.test"], &message("Queued on pg", "pgq-1"));
    let text = wait_for("an attempt in queue list", &srv, || {
        let t = queue_text(&srv);
        (!t.contains("attempts=0") && !t.is_empty()).then_some(t)
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("\t<alice@example.test>\trcpt@b.test\tattempts="),
        "{text}"
    );
    assert_eq!(rows(&pg, "q", "queue"), "1");
    let m = crate::http::get(srv.metrics.expect("http.metrics"), "localhost", "/metrics");
    let body = m.text();
    assert!(body.contains("\ntanba_queue_messages 1\n"), "{body}");

    let r = receiver(closed.release(), serde_json::json!({}));
    let id = queue_json(&srv)[0]["id"].as_u64().unwrap();
    stdout_ok(&srv.tanba(&["queue", "retry", &id.to_string()], None));
    wait_for("the message at the receiver", &srv, || {
        (!received(&r).is_empty()).then_some(())
    });
    wait_for("an empty queue table", &srv, || {
        (rows(&pg, "q", "queue") == "0").then_some(())
    });
    let got = received(&r);
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].1).contains("Subject: Queued on pg"));
    // The queued body was the only blob (no local copy): it went with the row.
    assert_eq!(rows(&pg, "q", "blobs"), "0");
    assert_eq!(queue_text(&srv), "");

    // A permanent refusal bounces into alice's INBOX.
    submit(&srv, &["reject-me@b.test"], &message("Refused", "pgq-2"));
    let dsn = wait_for("the DSN in alice's INBOX", &srv, || {
        mbox_messages(&srv.export("alice@example.test"))
            .into_iter()
            .next()
    });
    let d = String::from_utf8_lossy(&dsn);
    assert!(
        d.contains("Final-Recipient: rfc822; reject-me@b.test"),
        "{d}"
    );
    assert!(d.contains("Subject: Refused"), "{d}");
    wait_for("an empty queue table", &srv, || {
        (rows(&pg, "q", "queue") == "0").then_some(())
    });
    // Left: the DSN's body, once.
    assert_eq!(rows(&pg, "q", "blobs"), "1");
}

/// Two nodes on one database, messages queued while the receiver is down (both nodes retry
/// them every second): once it is up, each message arrives exactly once.
#[test]
fn pg_two_nodes_deliver_each_message_once() {
    const N: usize = 6;
    let pg = Postgres::start();
    pg.create_db("two");
    let closed = closed_port();
    let port = closed.port;
    let a = relaying_node(&pg, "two", port);
    let b = relaying_node(&pg, "two", port);
    a.add_user("alice@example.test", "secret-alice");
    for i in 0..N {
        let node = if i % 2 == 0 { &a } else { &b };
        submit(
            node,
            &["r@b.test"],
            &message(&format!("Twice? {i}"), &format!("two-{i}")),
        );
    }
    wait_for("every message attempted", &a, || {
        let q = queue_json(&a);
        (q.len() == N && q.iter().all(|r| r["attempts"].as_u64() >= Some(1))).then_some(())
    });
    let rec = Recorder::start(closed.release(), false);
    assert_eq!(rec.port, port);
    wait_for("every message at the receiver", &a, || {
        (rec.message_ids().len() >= N).then_some(())
    });
    wait_for("an empty queue table", &a, || {
        (rows(&pg, "two", "queue") == "0").then_some(())
    });
    let mut ids = rec.message_ids();
    assert_eq!(ids.len(), N, "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "a message arrived twice");
    assert_eq!(rows(&pg, "two", "blobs"), "0");
}

/// A node killed (kill -9) in the middle of a delivery leaves its lease; the other node takes
/// the message over once the lease has expired and delivers it.
#[test]
fn pg_killed_nodes_lease_is_taken_over() {
    let pg = Postgres::start();
    pg.create_db("kill");
    let rec = Recorder::start(0, true);
    let mut a = relaying_node(&pg, "kill", rec.port);
    a.add_user("alice@example.test", "secret-alice");
    submit(&a, &["r@b.test"], &message("Taken over", "takeover"));
    wait_for("node A stalled in DATA", &a, || rec.stalled().then_some(()));
    let pid = a.pid().unwrap();
    let owner = pg.query("kill", "SELECT lease_owner FROM queue");
    assert!(owner.contains(&format!("/{pid}/")), "{owner}");
    a.kill9();
    let b = relaying_node(&pg, "kill", rec.port);
    delivered_once(&rec, &pg, "kill", &b, "takeover");
    assert!(
        b.log().contains("done; removed from the queue"),
        "{}",
        b.log()
    );
}

/// A node killed (kill -9) in the middle of a delivery and started again on the same
/// `data_dir` takes its own lease back at start (the `node-id` file names the node), instead
/// of waiting for the lease (10 minutes by default, used here) to expire: the message goes out
/// once, at once.
#[test]
fn pg_restarted_node_takes_back_its_own_lease_at_once() {
    let pg = Postgres::start();
    pg.create_db("back");
    let rec = Recorder::start(0, true);
    let dir = tempfile::tempdir().unwrap();
    let toml = crate::support::pg::server_toml(
        dir.path(),
        &pg.url("back"),
        &[
            ("delivery", &format!("relay = \"127.0.0.1:{}\"", rec.port)),
            ("delivery", "retry = [\"1s\"]"),
        ],
    );
    let mut a = TestServer::start_toml_env(dir, &toml, &[]);
    a.add_user("alice@example.test", "secret-alice");
    submit(&a, &["r@b.test"], &message("Taken back", "takeback"));
    wait_for("the node stalled in DATA", &a, || {
        rec.stalled().then_some(())
    });
    let node = std::fs::read_to_string(a.data_dir().join("node-id")).unwrap();
    let node = node.trim();
    assert_eq!(node.len(), 32, "{node:?}");
    let owner = pg.query("back", "SELECT lease_owner FROM queue");
    let pid = a.pid().unwrap();
    assert!(
        owner.starts_with(&format!("{node}@")) && owner.contains(&format!("/{pid}/")),
        "{owner}"
    );
    a.kill9();
    a.restart();
    delivered_once(&rec, &pg, "back", &a, "takeback");
    assert!(
        a.log()
            .contains("took back 1 outbound messages this node was delivering"),
        "{}",
        a.log()
    );
    // The node keeps its name across restarts.
    let again = std::fs::read_to_string(a.data_dir().join("node-id")).unwrap();
    assert_eq!(again.trim(), node);
}

/// A live node renews its lease while a delivery takes longer than the lease (2 s here): the
/// lease's end moves on several times, the row stays the node's, and the other node running
/// meanwhile never takes the message over.
#[test]
fn pg_live_nodes_lease_is_renewed_and_never_taken_over() {
    let pg = Postgres::start();
    pg.create_db("renew");
    let rec = Recorder::start(0, true);
    let a = relaying_node(&pg, "renew", rec.port);
    a.add_user("alice@example.test", "secret-alice");
    submit(&a, &["r@b.test"], &message("Renewed", "renewed"));
    wait_for("node A stalled in DATA", &a, || rec.stalled().then_some(()));
    let owner = pg.query("renew", "SELECT lease_owner FROM queue");
    let until = |pg: &Postgres| {
        let t = pg.query("renew", "SELECT lease_until FROM queue");
        t.parse::<i64>().unwrap_or_else(|_| {
            panic!(
                "the row left node A (lease_until {t:?}); received: {:?}",
                rec.message_ids()
            )
        })
    };
    let first = until(&pg);
    let b = relaying_node(&pg, "renew", rec.port);
    // Two more lease lengths past the first lease's end: had node A not renewed, node B would
    // have claimed the row when the first lease ended.
    let target = first + 2 * LEASE.parse::<i64>().unwrap();
    wait_for("node A's lease renewed past two lease lengths", &a, || {
        (until(&pg) >= target).then_some(())
    });
    assert_eq!(pg.query("renew", "SELECT lease_owner FROM queue"), owner);
    assert!(rec.message_ids().is_empty(), "{:?}", rec.message_ids());
    assert!(!b.log().contains("renewed@example.test"), "{}", b.log());
    assert!(
        !b.log().contains("done; removed from the queue"),
        "{}",
        b.log()
    );
}
