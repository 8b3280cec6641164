//! Tanba: a self-hosted mail server for organisations whose documents are signed with NCA RK
//! (Kazakhstan) digital signatures.
//!
//! Mail path: SMTP in ([`smtp`]) → [`inbound`] (adds `Received:`, runs the signature [`filter`])
//! → [`store`] (sled) → IMAP out ([`imap`]). Mail for remote recipients goes from [`inbound`] into
//! the store's queue and out through [`delivery`]. [`server`] owns listeners, TLS and shutdown;
//! [`cli`] is the command line; [`admin`] lets the CLI reach a running server.
//!
//! Reading order: config → store → server → smtp → inbound → filter → imap → delivery → cli.
// An application crate: its docs are read with `cargo doc --document-private-items`, where
// links to private items resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod acme;
pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod filter;
pub mod http;
pub mod imap;
pub mod import;
pub mod inbound;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mime_guard;
pub mod perms;
pub mod preflight;
pub mod revocation;
pub mod senderauth;
pub mod server;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod tls;
