//! The one integration-test binary: each module is a suite over the real `tanba` binary on
//! loopback sockets with a fresh data dir.

mod support;

// CLI: config check/default, user management with and without a running server.
mod cli;
// The web endpoint (issue 14): listeners, autoconfig/autodiscover/Apple profile, MTA-STS, `tanba dns`.
mod http;
// Certificates by ACME (issue 14 point 3): issuance and renewal by a real pebble over HTTP-01,
// swapped into every TLS listener without a restart.
mod acme;
// `/metrics` (issue 14 point 5): counters moved by SMTP, the filter, IMAP logins and delivery.
mod metrics;
// The self-service page at /account, add-on downloads, `tanba clients policy thunderbird`
// (issue 14 point 6, issue 15 points 3–4).
mod userpage;
// SMTP: submission and MX, commands and replies, STARTTLS, AUTH, DATA/BDAT (also home of the
// raw SMTP test client, `smtp::Client`).
mod smtp;
// SMTP limits: sizes, line length, errors, timeouts, vanished clients, shutdown.
mod smtp_limits;
// SMTP against hostile input: smuggling with bare CR/LF, forged Authentication-Results, headers
// hidden behind a bare CR, large unfinished messages spooled to disk.
mod smtp_hostile;
// Connection limits per address and per pool, refusals on implicit-TLS ports, the submission
// login timeout, `user del` / `user passwd` ending live sessions (issue 11, findings 4 and 10).
mod conn_limits;
// Password checks and brute force (issue 11, findings 3 and 5): bans per address across SMTP and
// IMAP, the attacked account's owner still logs in, fail2ban filter, credential cache, password
// length.
mod auth_limits;
// `250` survives kill -9.
mod durability;
// Outbound delivery: MX via a loopback DNS server, DKIM, retries, bounces, restarts, smarthost.
mod delivery;
// Verified TLS on the way out: MTA-STS enforce/testing, the policy cache, TLS-RPT counts.
mod delivery_tls;
// DANE on the way out: a zone signed with ldns-signzone, served by NSD on loopback.
mod delivery_dane;
// The signature filter: a test PKI made with openssl (`filter_pki`), every MIME shape, each
// failure reason, stamping, and SMTP delivery stamped in the store.
mod filter;
mod filter_pki;
// `tanba verify` on the real NCA RK samples (RSA and GOST) with the NCA test roots via --trust.
mod verify;
// IMAP: a Thunderbird-like imaplib session, IDLE and multi-session updates, BODYSTRUCTURE and
// sections, SEARCH, mailboxes, authentication, bad input, limits, durability (home of the raw
// IMAP test client, `imap::Imap`).
mod imap;
// IMAP limits (issue 11): command size and the state gate before literals, login timeout, error
// limits, LIST patterns.
mod imap_limits;
// CONDSTORE/QRESYNC (RFC 7162), keywords announced before use, views patched from the modseq
// index (issue 16).
mod imap_condstore;
// IMAP subscriptions and LIST (issue 16): subscriptions as names of their own and their migration,
// LIST-EXTENDED with RECURSIVEMATCH/CHILDINFO, LIST-STATUS, STATUS=SIZE, invalid UTF-7 patterns.
mod imap_list;
// Issue 16: SEARCH on addresses, ESEARCH, SEARCHRES, SORT, SORT=DISPLAY, THREAD.
mod imap_search;
// Issue 16's extensions: QUOTA (IMAP and SMTP 452/552), COMPRESS=DEFLATE, BINARY, MULTIAPPEND,
// MOVE into the selected mailbox.
mod imap_ext;
// IMAP sync with a real client: mbsync (Debian `isync`) two ways, over IMAPS and STARTTLS.
mod imap_sync;
// Revocation: NCA test CRLs and OCSP answers, fetching over loopback HTTP, disk cache,
// responder down (also the shared `TestPki` / `HttpServer` helpers).
mod revocation;
// RFC 3161 timestamps: the NCA test token, an `openssl ts` TSA, validation at genTime.
mod tsp;
// `tanba certs fetch-nca` against a loopback mirror, `tanba certs list`.
mod certs;
// End to end: signed mail over SMTP (MX and submission), fetched over IMAP with stamp and keywords.
mod filter_e2e;
// Issue 11, findings 6 and 9: client bytes escaped in the log, colours only on a terminal,
// data_dir private under any umask.
mod hardening;
// Hostile MIME structure (issue 11, finding 1): nesting and part counts over MX, APPEND + SEARCH
// across a restart, `tanba verify` / `stamp`.
mod hostile_mime;
// Issue 12 (operators): config lookup order, admin commands that never create a store,
// `config check` catching what `serve` refuses, helpful messages, verify's time zone.
mod operator;
// Issue 12 items 7 and 8: postmaster/abuse, aliases, sub-addresses; SIGHUP reload.
mod operator_mail;
// Issue 12, item 3: `tanba store check`, `backup` while serving / `restore` round trip over
// IMAP, the store's format version, `store rebuild` after sled's db file is destroyed.
mod store_ops;
// Issue 12, item 1: faults heal — disk full (452, OVERQUOTA, nothing lost, serves again), sled
// I/O errors exit for a restart, read-only and vanished data_dir (tmpfs; needs root).
mod faults;
// Issue 12, item 2: every acknowledgement follows an fdatasync of sled's log (strace counts).
mod fsync;
// Issue 16: what STORE/EXPUNGE without their own flush still promise (CHECK, LOGOUT and later
// durable acknowledgements as barriers), across kill -9.
mod imap_perf_guarantees;
// What the fuzz targets found (fuzz/regressions/), replayed against the real server.
mod fuzz_regressions;
// `tanba import maildir|mbox` (issue 12 item 4): a maildir written by a real Dovecot, an mbox
// round trip through `tanba export`, serving and stopped, oversize messages skipped.
mod import;
// Issue 18: the cache of verified certificate signatures cannot change a verdict (the failure
// corpus twice, revoked and expired between messages, a tampered certificate, reload).
mod signed_cache;
// Sender authentication on the MX: SPF, DKIM, DMARC, ARC, Sender-Match (issue 13).
mod senderauth;
// Greylisting (RFC 6647) and the per-address MX message rate (issue 13, point 3).
mod greylist;
// The store on PostgreSQL (issue 17, docs/cluster.md): `[store]` keys, schema
// version, `tanba user` and `tanba store migrate` against a throw-away PostgreSQL.
mod pg;
// Two nodes on one PostgreSQL database (issue 17): IDLE and FETCH across nodes, concurrent
// APPENDs through both, kill -9 of one node under SMTP load.
mod cluster;
// Operations on PostgreSQL: failover to a streaming replica, `store check`, size, backup.
mod pg_failover;
// PostgreSQL node plumbing: the LISTEN connection feeding IDLE (reconnect, resync), TLS to the
// database (sslmode, store.ca_file), store.pool.
mod pg_cluster_basics;
// `tanba store migrate --from sled` of a populated store, then served from PostgreSQL.
mod pg_migrate;
// Messages on PostgreSQL: delivery, APPEND, flags, COPY/MOVE, EXPUNGE, CONDSTORE/QRESYNC, quota,
// kill -9 (issue 17).
mod pg_imap;
// The outbound queue with leases, aliases and greylisting on PostgreSQL; two nodes on one database.
mod pg_queue;
// Review of the PostgreSQL backend: its observable behaviour against sled's, lock order.
mod pg_review;
