//! The one integration-test binary: each module is a suite over the real `tanba` binary on
//! loopback sockets with a fresh data dir.

mod support;

// CLI: config check/default, user management with and without a running server.
mod cli;
