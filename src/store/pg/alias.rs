//! Aliases on PostgreSQL: the `aliases` table (address → MessagePack [`Alias`], as on sled) and
//! the same resolution walk as `store/alias.rs` ([`resolve_with`]).

use super::super::account::Account;
use super::super::alias::{resolve_with, Alias, Lookup, Resolution, Rules};
use super::super::{dec, enc, Result, StoreError};
use super::Pg;

impl Pg {
    pub(crate) fn alias(&self, address: &str) -> Result<Option<Alias>> {
        let a = address.trim().to_ascii_lowercase();
        if !super::account::storable(&a) {
            return Ok(None);
        }
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("SELECT record FROM aliases WHERE address = $1")
                        .await?,
                    &[&a],
                )
                .await?;
            row.map(|r| dec(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    /// Every alias, ordered by address (as sled's tree is).
    pub(crate) fn aliases(&self) -> Result<Vec<Alias>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &c.prepare_cached("SELECT record FROM aliases ORDER BY address COLLATE \"C\"")
                        .await?,
                    &[],
                )
                .await?;
            rows.iter().map(|r| dec(r.get::<_, &[u8]>(0))).collect()
        })
    }

    /// Stores (replaces) an alias as given; `alias add` validates it first (admin.rs).
    pub(crate) fn put_alias(&self, alias: &Alias) -> Result<()> {
        let (address, record) = (alias.address.clone(), enc(alias));
        self.run(|pg| async move {
            let c = pg.conn().await?;
            c.execute(
                "INSERT INTO aliases (address, record) VALUES ($1, $2) \
                 ON CONFLICT (address) DO UPDATE SET record = EXCLUDED.record",
                &[&address, &record],
            )
            .await?;
            Ok(())
        })
    }

    pub(crate) fn delete_alias(&self, address: &str) -> Result<Alias> {
        let a = address.trim().to_ascii_lowercase();
        if !super::account::storable(&a) {
            return Err(StoreError::NotFound(format!("alias {a}")));
        }
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("DELETE FROM aliases WHERE address = $1 RETURNING record")
                        .await?,
                    &[&a],
                )
                .await?;
            match row {
                Some(r) => dec(r.get::<_, &[u8]>(0)),
                None => Err(StoreError::NotFound(format!("alias {a}"))),
            }
        })
    }

    /// Resolves a recipient address exactly as on sled (`store/alias.rs`).
    pub(crate) fn resolve(
        &self,
        addr: &str,
        rules: Rules<'_>,
        overlay: Option<&Alias>,
    ) -> Result<Resolution> {
        resolve_with(self, addr, rules, overlay)
    }
}

impl Lookup for Pg {
    fn alias(&self, address: &str) -> Result<Option<Alias>> {
        Pg::alias(self, address)
    }
    fn account_for_address(&self, addr: &str) -> Result<Option<Account>> {
        Pg::account_for_address(self, addr)
    }
    fn accounts(&self) -> Result<Vec<Account>> {
        Pg::accounts(self)
    }
}
