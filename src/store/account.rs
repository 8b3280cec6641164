//! Accounts: one per mail user, keyed by lower-case email address. Passwords are stored only as
//! argon2id PHC strings; the clear password never reaches the store or a log.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{dec, enc, mailbox, now_unix, u64_key, Result, Store, StoreError};

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

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash password: {e}")))
}

/// Checks a password against a PHC string. Constant-time in the comparison (argon2 crate).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
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

impl Store {
    /// Creates an account with its default mailboxes (INBOX, Drafts, Sent, Trash, Junk, Archive),
    /// all in one transaction.
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
        (&t.accounts, &t.mailbox_names, &t.mailboxes).transaction(|(acc, names, mbs)| {
            if acc.get(email.as_bytes())?.is_some() {
                return Err(StoreError::Exists(format!("account {email}")).into());
            }
            acc.insert(email.as_bytes(), enc(&account))?;
            for m in &boxes {
                names.insert(mailbox::name_key(id, &m.name), &u64_key(m.id))?;
                mbs.insert(&u64_key(m.id), enc(m))?;
            }
            Ok(())
        })?;
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
        self.t.accounts.transaction(|acc| {
            let Some(v) = acc.get(email.as_bytes())? else {
                return Err(StoreError::NotFound(format!("account {email}")).into());
            };
            let mut a: Account = dec(&v)?;
            a.password_hash = password_hash.to_string();
            acc.insert(email.as_bytes(), enc(&a))?;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes an account and all of its mail.
    pub fn delete_account(&self, email: &str) -> Result<Account> {
        let email = email.trim().to_ascii_lowercase();
        let Some(account) = self.account(&email)? else {
            return Err(StoreError::NotFound(format!("account {email}")));
        };
        // The account record goes first: from then on nobody can log in or receive mail, and a
        // crash during the clean-up below leaves only unreachable mailboxes.
        self.t.accounts.remove(email.as_bytes())?;
        for m in self.mailboxes(account.id)? {
            self.remove_mailbox_contents(&m)?;
            self.t
                .mailbox_names
                .remove(mailbox::name_key(account.id, &m.name))?;
            self.t.mailboxes.remove(u64_key(m.id))?;
        }
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
