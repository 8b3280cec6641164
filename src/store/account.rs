//! Accounts: one per mail user, keyed by lower-case email address. Passwords are stored only as
//! argon2id PHC strings; the clear password never reaches the store or a log.

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{dec, enc, mailbox, now_unix, u64_key, Result, Sled, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub id: u64,
    /// Lower-case primary address; also the login name.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// Further addresses this user may send as and receive for (lower-case). The primary address is
    /// not repeated here.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Account {
    /// Whether `addr` (any case) is one of this account's own addresses.
    pub fn owns(&self, addr: &str) -> bool {
        let a = addr.to_ascii_lowercase();
        a == self.email || self.aliases.contains(&a)
    }
}

/// Memory for one argon2 computation with our parameters (`Params::DEFAULT`: 19 MiB), to be
/// reused across calls: the hashing workers of `crate::auth` each own one, so the process holds
/// workers × 19 MiB however many logins arrive (a fresh block per call, freed on whichever thread
/// ran it, stays in that thread's malloc arena).
pub fn argon2_memory() -> Vec<Block> {
    vec![Block::default(); Params::DEFAULT.block_count()]
}

/// Hashes a password with argon2id and a random salt (PHC string), allocating its own memory
/// (the CLI without a server; tests).
pub fn hash_password(password: &str) -> Result<String> {
    hash_password_in(password, &mut [])
}

/// Hashes a password with argon2id (`Params::DEFAULT`) and a random salt into a PHC string,
/// computing in `memory` when it is large enough (see [`argon2_memory`]), else in a one-off
/// allocation.
pub fn hash_password_in(password: &str, memory: &mut [Block]) -> Result<String> {
    let fail =
        |e: &dyn std::fmt::Display| StoreError::Invalid(format!("cannot hash password: {e}"));
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| fail(&e))?;
    let params = Params::DEFAULT;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password,
        salt_bytes,
        &mut out,
        memory,
    )
    .map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks a password against a PHC string, allocating its own memory. Constant-time in the
/// comparison.
pub fn verify_password(hash: &str, password: &str) -> bool {
    verify_password_in(hash, password, &mut [])
}

/// Checks a password against a PHC string with the algorithm, version and parameters (m, t, p,
/// output length) that string names, computing in `memory` when it is large enough for them
/// (see [`argon2_memory`]), else in a one-off allocation. The comparison is constant-time
/// (`password_hash::Output`'s equality).
pub fn verify_password_in(hash: &str, password: &str, memory: &mut [Block]) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if compute(algorithm, version, params, password, salt, &mut out, memory).is_err() {
        return false;
    }
    Output::new(&out).is_ok_and(|o| o == expected)
}

/// One argon2 computation in `memory` (or a one-off allocation when it is too small).
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
    memory: &mut [Block],
) -> std::result::Result<(), argon2::Error> {
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    match memory.get_mut(..blocks) {
        Some(m) => argon.hash_password_into_with_memory(password.as_bytes(), salt, out, m),
        None => argon.hash_password_into(password.as_bytes(), salt, out),
    }
}

/// Validates and normalises an email address for an account: `local@domain`, lower-cased.
pub fn normalize_email(email: &str) -> Result<String> {
    let e = email.trim().to_ascii_lowercase();
    let ok = match e.split_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && !d.is_empty()
                && !d.contains('@')
                && !e.contains(|c: char| {
                    c.is_whitespace() || c.is_control() || "<>(),;:\\\"[]".contains(c)
                })
        }
        None => false,
    };
    if !ok {
        return Err(StoreError::Invalid(format!(
            "{email:?} is not an email address like user@example.kz"
        )));
    }
    Ok(e)
}

impl Sled {
    /// Creates an account with its default mailboxes (INBOX, Drafts, Sent, Trash, Junk, Archive),
    /// subscribed, all in one transaction.
    pub fn create_account(&self, email: &str, password_hash: &str) -> Result<Account> {
        let email = normalize_email(email)?;
        // Refused whole while the disk is (nearly) full; otherwise one transaction: no
        // half-made account either way.
        self.check_space(0)?;
        let id = self.next_id()?;
        let account = Account {
            id,
            email: email.clone(),
            password_hash: password_hash.to_string(),
            created: now_unix(),
            aliases: Vec::new(),
        };
        let mut boxes = Vec::new();
        for (name, special) in mailbox::DEFAULT_MAILBOXES {
            boxes.push(mailbox::MailboxMeta::new(
                self.next_id()?,
                id,
                name,
                *special,
            ));
        }
        let t = &self.t;
        let w = self.write_gate();
        (
            &t.accounts,
            &t.mailbox_names,
            &t.mailboxes,
            &t.subscriptions,
        )
            .transaction(|(acc, names, mbs, subs)| {
                if acc.get(email.as_bytes())?.is_some() {
                    return Err(StoreError::Exists(format!("account {email}")).into());
                }
                acc.insert(email.as_bytes(), enc(&account))?;
                for m in &boxes {
                    names.insert(mailbox::name_key(id, &m.name), &u64_key(m.id))?;
                    mbs.insert(&u64_key(m.id), enc(m))?;
                    subs.insert(mailbox::name_key(id, &m.name), mailbox::EMPTY)?;
                }
                Ok(())
            })?;
        drop(w);
        Ok(account)
    }

    pub fn account(&self, email: &str) -> Result<Option<Account>> {
        let email = email.trim().to_ascii_lowercase();
        match self.t.accounts.get(email.as_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// The account that receives mail for `addr` (its primary address or an alias).
    pub fn account_for_address(&self, addr: &str) -> Result<Option<Account>> {
        if let Some(a) = self.account(addr)? {
            return Ok(Some(a));
        }
        let addr = addr.to_ascii_lowercase();
        Ok(self
            .accounts()?
            .into_iter()
            .find(|a| a.aliases.contains(&addr)))
    }

    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.t.accounts.iter().values().map(|v| dec(&v?)).collect()
    }

    pub fn set_password(&self, email: &str, password_hash: &str) -> Result<()> {
        let email = email.trim().to_ascii_lowercase();
        let w = self.write_gate();
        self.t.accounts.transaction(|acc| {
            let Some(v) = acc.get(email.as_bytes())? else {
                return Err(StoreError::NotFound(format!("account {email}")).into());
            };
            let mut a: Account = dec(&v)?;
            a.password_hash = password_hash.to_string();
            acc.insert(email.as_bytes(), enc(&a))?;
            Ok(())
        })?;
        drop(w);
        Ok(())
    }

    /// Removes an account and all of its mail.
    ///
    /// Live sessions of the account may still be running (the server ends them right after,
    /// SPEC §8), so the order matters: first the account record and its INBOX name, in one
    /// transaction; from then on nobody can log in or receive mail, and no mailbox can be
    /// created or renamed for it (`mailbox::account_alive`). Then each mailbox's name and record
    /// (after which nothing can be added to it), then its messages. A crash midway leaves only
    /// unreachable records.
    pub fn delete_account(&self, email: &str) -> Result<Account> {
        let email = email.trim().to_ascii_lowercase();
        let Some(account) = self.account(&email)? else {
            return Err(StoreError::NotFound(format!("account {email}")));
        };
        let inbox = self.mailbox(account.id, "INBOX")?;
        let inbox_key = mailbox::name_key(account.id, "INBOX");
        let t = &self.t;
        let w = self.write_gate();
        (&t.accounts, &t.mailbox_names).transaction(|(acc, names)| {
            if acc.remove(email.as_bytes())?.is_none() {
                return Err(StoreError::NotFound(format!("account {email}")).into());
            }
            names.remove(inbox_key.as_slice())?;
            Ok(())
        })?;
        drop(w);
        // The set of mailboxes is now fixed (none can be created or renamed).
        let mut boxes = self.mailboxes(account.id)?;
        boxes.extend(inbox);
        for m in &boxes {
            self.drop_mailbox(account.id, m)?;
            self.notify(account.id, m.id);
        }
        self.drop_subscriptions(account.id)?;
        self.drop_quota(account.id)?;
        Ok(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "x"));
    }

    /// Finding 10: a session of a deleted account still holds its ids; nothing it does may
    /// leave data behind.
    #[test]
    fn nothing_is_written_for_a_deleted_account() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        let bob = s.create_account("bob@example.test", "h").unwrap();
        let alice = s.create_account("alice@example.test", "h").unwrap();
        let inbox = s.mailbox(bob.id, "INBOX").unwrap().unwrap();
        s.create_mailbox(bob.id, "Projects/2026", None).unwrap();
        let big = vec![b'x'; 100 * 1024];
        s.append(inbox.id, b"Subject: a\r\n\r\nsmall\r\n", &[], 0)
            .unwrap();
        s.append(inbox.id, &big, &[], 0).unwrap();
        s.delete_account("bob@example.test").unwrap();

        assert!(s.create_mailbox(bob.id, "Orphan", None).is_err());
        assert!(s.create_mailbox(bob.id, "INBOX", None).is_err());
        assert!(s
            .append(inbox.id, b"Subject: b\r\n\r\nlate\r\n", &[], 0)
            .is_err());
        assert!(s.rename_mailbox(bob.id, "Projects", "Other").is_err());
        // Nothing of bob's is left: no names, no records, no messages, no bodies.
        let t = &s.t;
        assert_eq!(t.mailbox_names.scan_prefix(u64_key(bob.id)).count(), 0);
        assert!(t
            .mailboxes
            .iter()
            .values()
            .all(|v| dec::<mailbox::MailboxMeta>(&v.unwrap()).unwrap().account_id == alice.id));
        assert_eq!(t.messages.len(), 0);
        assert_eq!(t.blobs.len() + t.blob_files.len() + t.blob_refs.len(), 0);
        // alice is untouched and still works.
        let a_inbox = s.mailbox(alice.id, "INBOX").unwrap().unwrap();
        s.append(a_inbox.id, b"Subject: c\r\n\r\nfine\r\n", &[], 0)
            .unwrap();
        s.create_mailbox(alice.id, "New", None).unwrap();
    }

    #[test]
    fn reused_memory_gives_the_same_answers_as_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = argon2_memory();
        // Ours, checked by the crate's own verifier (and the other way round).
        let ours = hash_password_in("correct horse", &mut memory).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        // The same memory, used again and again, with right and wrong passwords.
        for _ in 0..2 {
            assert!(verify_password_in(&theirs, "battery staple", &mut memory));
            assert!(!verify_password_in(&theirs, "battery stapler", &mut memory));
            assert!(verify_password_in(&ours, "correct horse", &mut memory));
            assert!(!verify_password_in(&ours, "correct horsE", &mut memory));
        }
        // Unusual parameters: larger than the block (one-off allocation) and smaller (a prefix),
        // and argon2i instead of argon2id.
        for (alg, m, t, p) in [
            (Algorithm::Argon2id, 20 * 1024, 1, 2),
            (Algorithm::Argon2id, 64, 3, 1),
            (Algorithm::Argon2i, 1024, 2, 1),
        ] {
            let params = Params::new(m, t, p, Some(24)).unwrap();
            let h = Argon2::new(alg, Version::V0x13, params)
                .hash_password(b"pw-unusual", &salt)
                .unwrap()
                .to_string();
            assert!(verify_password_in(&h, "pw-unusual", &mut memory), "{h}");
            assert!(!verify_password_in(&h, "pw-unusuaL", &mut memory), "{h}");
        }
        // A block too small for anything falls back to its own allocation.
        assert!(verify_password_in(&ours, "correct horse", &mut []));
    }

    #[test]
    fn email_normalisation() {
        assert_eq!(
            normalize_email(" Alice@Example.KZ ").unwrap(),
            "alice@example.kz"
        );
        assert!(normalize_email("nobody").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("a b@c").is_err());
    }
}
