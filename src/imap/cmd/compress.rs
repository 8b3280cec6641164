//! COMPRESS DEFLATE (RFC 4978): the tagged OK goes out uncompressed, then both directions are
//! raw deflate (`conn.rs`). Valid once logged in (RFC 4978 §3); a second COMPRESS gets
//! `NO [COMPRESSIONACTIVE]`.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Code;

use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::session::Session;

pub async fn compress(s: &mut Session, tag: &Tag<'static>) -> CmdResult {
    if s.conn.is_compressed() {
        return Ok(Reply::no("DEFLATE is already active").code(Code::CompressionActive));
    }
    let ok = Reply::ok("DEFLATE active");
    s.conn.write(&response::tagged(Some(tag), &ok));
    s.conn.flush().await?;
    s.conn.start_deflate();
    Ok(Reply { sent: true, ..ok })
}
