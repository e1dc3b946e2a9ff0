//! The catalog the store keeps (`{store}/catalog/`, see the catalog crate's `store`):
//! importing a config file's catalog into it, exporting it as TOML, and reading names and
//! payouts from it for reports.

use std::path::Path;

use catalog::File;
use catalog::store::{CatalogStore, Change, Deleted, Kind, State};
use serde::de::IgnoredAny;

use crate::Result;
use crate::names::Names;
use crate::session::open_store;

/// The catalog in the store at `url` (which must exist).
pub fn open(url: &str) -> Result<CatalogStore> {
    Ok(CatalogStore::new(open_store(url)?))
}

/// The catalog in the store at `url`, a local store's directory made if missing (an import
/// may come before any edge has run).
pub fn create(url: &str) -> Result<CatalogStore> {
    Ok(CatalogStore::new(sink::storage::store::open(url)?))
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The version the store's catalog is at now.
    pub version: u64,
    /// False when the store already held exactly this catalog (nothing was written).
    pub changed: bool,
    /// Objects of each kind now in the catalog.
    pub counts: Vec<(Kind, usize)>,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        write!(
            f,
            "catalog version {}{}: {}",
            self.version,
            if self.changed { "" } else { " (unchanged)" },
            counts.join(", ")
        )
    }
}

/// Makes the store's catalog the catalog sections of the config file at `path` (its
/// `[server]` is skipped): one commit that replaces everything, checked first like any
/// change.
pub async fn import(cs: &CatalogStore, path: &Path) -> Result<Imported> {
    let sections = File::<IgnoredAny>::load(path)?.into_sections();
    // Checked as written (a duplicate id is an error, not a replaced object).
    catalog::Catalog::compile(&sections)?;
    let mut state = cs.load().await?;
    let mut wanted = State::default();
    wanted.apply(&catalog::store::Commit {
        version: 1,
        ts_ms: 0,
        by: String::new(),
        replace: true,
        put: sections.clone(),
        delete: Deleted::default(),
    });
    let changed = state.version == 0 || wanted.sections() != state.sections();
    if changed {
        let change = Change {
            replace: true,
            put: sections,
            delete: Deleted::default(),
        };
        cs.change(&mut state, change, "import").await?;
    }
    Ok(Imported {
        version: state.version,
        changed,
        counts: Kind::ALL.iter().map(|&k| (k, state.len(k))).collect(),
    })
}

/// The store's catalog as a config file's sections, in TOML.
pub async fn export(cs: &CatalogStore) -> Result<String> {
    let state = cs.load().await?;
    toml::to_string(&state.sections()).map_err(|e| {
        crate::QueryError::Io(std::io::Error::other(format!(
            "cannot write the catalog as TOML: {e}"
        )))
    })
}

/// Names and payout histories from the store's catalog, when it holds one.
pub async fn names(cs: &CatalogStore) -> Result<Option<Names>> {
    Names::from_store(&cs.load().await?)
}
