//! The catalog kept in the store, under `{store}/catalog/`, so that every edge sharing a
//! bucket follows one catalog instead of a file copied to each: an append-only log of
//! commits with periodic checkpoints, in the spirit of Delta Lake's `_delta_log`.
//!
//! ```text
//! catalog/log/00000000000000000001.json          commit 1: objects put, ids deleted
//! catalog/checkpoints/00000000000000000100.json  the whole catalog as of version 100
//! catalog/_last_checkpoint                        {"version":100}: where a reader starts
//! ```
//!
//! A commit is created with a conditional put (create only if absent): of two writers that
//! both read version N, one creates N + 1 and the other gets [`CatalogError::Conflict`] and
//! must read again. An object appears whole or not at all, so a reader never sees half a
//! commit. A checkpoint is written after every [`CHECKPOINT_EVERY`]th commit and after an
//! import; `_last_checkpoint` is a hint only (a reader that finds it missing lists the
//! checkpoints). Version 0 is the empty catalog.
//!
//! Readers ignore fields of commits and checkpoints they do not know, so a newer writer can
//! add some without stopping older edges; the objects themselves are checked like a config
//! file (an unknown key is an error).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::file::Sections;

mod check;
mod state;

pub use state::State;

/// A checkpoint follows every this many commits.
pub const CHECKPOINT_EVERY: u64 = 100;

const LOG: &str = "catalog/log";
const CHECKPOINTS: &str = "catalog/checkpoints";
const LAST_CHECKPOINT: &str = "catalog/_last_checkpoint";

/// The five kinds of catalog object, by their config-file section names (also the console
/// API's paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    TrafficSources,
    AffiliateNetworks,
    Offers,
    LandingPages,
    Campaigns,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TrafficSources,
        Kind::AffiliateNetworks,
        Kind::Offers,
        Kind::LandingPages,
        Kind::Campaigns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrafficSources => "traffic_sources",
            Kind::AffiliateNetworks => "affiliate_networks",
            Kind::Offers => "offers",
            Kind::LandingPages => "landing_pages",
            Kind::Campaigns => "campaigns",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ids deleted by a commit, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affiliate_networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub landing_pages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<String>,
}

impl Deleted {
    pub fn of(&self, kind: Kind) -> &Vec<String> {
        match kind {
            Kind::TrafficSources => &self.traffic_sources,
            Kind::AffiliateNetworks => &self.affiliate_networks,
            Kind::Offers => &self.offers,
            Kind::LandingPages => &self.landing_pages,
            Kind::Campaigns => &self.campaigns,
        }
    }

    pub fn of_mut(&mut self, kind: Kind) -> &mut Vec<String> {
        match kind {
            Kind::TrafficSources => &mut self.traffic_sources,
            Kind::AffiliateNetworks => &mut self.affiliate_networks,
            Kind::Offers => &mut self.offers,
            Kind::LandingPages => &mut self.landing_pages,
            Kind::Campaigns => &mut self.campaigns,
        }
    }

    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&k| self.of(k).is_empty())
    }
}

/// What a writer asks to change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Replace the whole catalog: everything not in `put` is deleted (an import).
    pub replace: bool,
    /// Objects created or replaced, whole.
    pub put: Sections,
    pub delete: Deleted,
}

/// One version of the catalog: the change that made it from the one before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub version: u64,
    /// When it was written (the writer's clock, Unix milliseconds).
    pub ts_ms: u64,
    /// Who wrote it (`import`, `api`, …), for people reading the log.
    #[serde(default)]
    pub by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    #[serde(default)]
    pub put: Sections,
    #[serde(default)]
    pub delete: Deleted,
}

/// An offer's default payout from a time on: a conversion without a payout earns the one in
/// force when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PayoutSince {
    pub since_ms: u64,
    pub payout: f64,
}

/// The whole catalog as of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u64,
    pub ts_ms: u64,
    pub catalog: Sections,
    /// Each offer's default payouts over time, oldest first (deleted offers included).
    #[serde(default)]
    pub payouts: BTreeMap<String, Vec<PayoutSince>>,
    /// The names of deleted objects, by `kind/id`: reports over past events still name them.
    #[serde(default)]
    pub retired: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LastCheckpoint {
    version: u64,
}

/// Why the store's catalog cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog in the store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{path}: not a readable catalog object: {reason}")]
    Damaged { path: String, reason: String },
    /// The change leaves an invalid catalog; the key names the object and its field.
    #[error(transparent)]
    Invalid(ConfigError),
    #[error("{kind}/{id} is used by {by}; change or delete that first")]
    Referenced { kind: Kind, id: String, by: String },
    #[error("{kind}/{id} does not exist")]
    NotFound { kind: Kind, id: String },
    #[error(
        "version {version} of the catalog was written by someone else meanwhile; read it and try again"
    )]
    Conflict { version: u64 },
}

/// Applies `c` to a catalog held as sections (objects put replace those with their id).
fn apply_to_sections(s: &mut Sections, c: Commit) {
    if c.replace {
        *s = c.put;
        return;
    }
    fn merge<T>(items: &mut Vec<T>, put: Vec<T>, deleted: &[String], id: impl Fn(&T) -> &str) {
        if put.is_empty() && deleted.is_empty() {
            return;
        }
        {
            let gone: std::collections::HashSet<&str> = deleted
                .iter()
                .map(String::as_str)
                .chain(put.iter().map(&id))
                .collect();
            items.retain(|t| !gone.contains(id(t)));
        }
        items.extend(put);
    }
    let (p, d) = (c.put, &c.delete);
    merge(
        &mut s.traffic_sources,
        p.traffic_sources,
        &d.traffic_sources,
        |t| &t.id,
    );
    merge(
        &mut s.affiliate_networks,
        p.affiliate_networks,
        &d.affiliate_networks,
        |t| &t.id,
    );
    merge(&mut s.offers, p.offers, &d.offers, |t| &t.id);
    merge(
        &mut s.landing_pages,
        p.landing_pages,
        &d.landing_pages,
        |t| &t.id,
    );
    merge(&mut s.campaigns, p.campaigns, &d.campaigns, |t| &t.id);
}

fn log_path(version: u64) -> ObjectPath {
    ObjectPath::from(format!("{LOG}/{version:020}.json"))
}

fn checkpoint_path(version: u64) -> ObjectPath {
    ObjectPath::from(format!("{CHECKPOINTS}/{version:020}.json"))
}

/// The catalog in one store.
#[derive(Clone)]
pub struct CatalogStore {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for CatalogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CatalogStore({})", self.store)
    }
}

impl CatalogStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        CatalogStore { store }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &ObjectPath,
    ) -> Result<Option<T>, CatalogError> {
        let bytes = match self.store.get(path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CatalogError::Damaged {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// The newest checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, CatalogError> {
        let hint: Option<LastCheckpoint> =
            self.get_json(&ObjectPath::from(LAST_CHECKPOINT)).await?;
        if let Some(h) = hint
            && let Some(cp) = self.checkpoint_at(h.version).await?
        {
            return Ok(Some(cp));
        }
        let prefix = ObjectPath::from(CHECKPOINTS);
        let newest = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move {
                Ok(m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|v| v.parse::<u64>().ok()))
            })
            .try_fold(
                None,
                |max: Option<u64>, v| async move { Ok(max.max(Some(v))) },
            )
            .await?;
        match newest {
            Some(v) => self.checkpoint_at(v).await,
            None => Ok(None),
        }
    }

    async fn checkpoint_at(&self, version: u64) -> Result<Option<Checkpoint>, CatalogError> {
        let path = checkpoint_path(version);
        match self.get_json::<Checkpoint>(&path).await? {
            Some(cp) if cp.version != version => Err(CatalogError::Damaged {
                path: path.to_string(),
                reason: format!("holds version {}", cp.version),
            }),
            other => Ok(other),
        }
    }

    /// Where a reader starts: the newest checkpoint, or the empty catalog when there is none
    /// or it cannot be read (the log, never rewritten, then replays from version 1).
    async fn start(&self) -> Result<Option<Checkpoint>, CatalogError> {
        match self.latest_checkpoint().await {
            Err(e @ CatalogError::Damaged { .. }) => {
                tracing::warn!("{e}; reading the catalog's log from its first version instead");
                Ok(None)
            }
            other => other,
        }
    }

    /// Commit `version`, when it has been written.
    pub async fn commit_at(&self, version: u64) -> Result<Option<Commit>, CatalogError> {
        let path = log_path(version);
        let c: Option<Commit> = self.get_json(&path).await?;
        match c {
            Some(c) if c.version != version => Err(CatalogError::Damaged {
                path: path.to_string(),
                reason: format!("holds version {}", c.version),
            }),
            other => Ok(other),
        }
    }

    /// The newest version: the newest checkpoint and every commit after it.
    pub async fn load(&self) -> Result<State, CatalogError> {
        let mut state = self
            .start()
            .await?
            .map(State::from_checkpoint)
            .unwrap_or_default();
        self.catch_up(&mut state).await?;
        Ok(state)
    }

    /// The newest version as a config file's sections, for a reader that compiles it and
    /// lets it go (an edge starting): no per-id maps are built, and the checkpoint's objects
    /// are moved, not copied. Returns the version with them.
    pub async fn load_sections(&self) -> Result<(u64, Sections), CatalogError> {
        let (mut version, mut sections) = self
            .start()
            .await?
            .map_or((0, Sections::default()), |c| (c.version, c.catalog));
        while let Some(c) = self.commit_at(version + 1).await? {
            apply_to_sections(&mut sections, c);
            version += 1;
        }
        Ok((version, sections))
    }

    /// Applies every commit after `state`'s version; returns them.
    pub async fn catch_up(&self, state: &mut State) -> Result<Vec<Commit>, CatalogError> {
        let mut applied = Vec::new();
        while let Some(c) = self.commit_at(state.version + 1).await? {
            state.apply(&c);
            applied.push(c);
        }
        Ok(applied)
    }

    /// Writes `commit` as the next version after `state`, which it then applies; a
    /// checkpoint follows every [`CHECKPOINT_EVERY`]th version (best effort: a failed one is
    /// written again by the next). Fails with [`CatalogError::Conflict`] when another writer
    /// took the version first.
    pub async fn write(&self, state: &mut State, commit: Commit) -> Result<(), CatalogError> {
        debug_assert_eq!(commit.version, state.version + 1);
        let body = serde_json::to_vec(&commit).expect("a commit serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self
            .store
            .put_opts(&log_path(commit.version), PutPayload::from(body), opts)
            .await;
        if let Err(e) = put {
            // A put whose answer was lost may have been made, and a client retry of it then
            // finds the object there: if what is there is this very commit, it is written.
            let ours = matches!(self.commit_at(commit.version).await, Ok(Some(c)) if c == commit);
            match e {
                _ if ours => {}
                object_store::Error::AlreadyExists { .. } => {
                    return Err(CatalogError::Conflict {
                        version: commit.version,
                    });
                }
                e => return Err(e.into()),
            }
        }
        state.apply(&commit);
        if (commit.replace || state.version.is_multiple_of(CHECKPOINT_EVERY))
            && let Err(e) = self.write_checkpoint(state).await
        {
            tracing::warn!(
                "catalog checkpoint of version {} not written: {e}",
                state.version
            );
        }
        Ok(())
    }

    /// Prepares `change` against the newest version and writes it, reading again and
    /// retrying when another writer got there first.
    pub async fn change(
        &self,
        state: &mut State,
        change: Change,
        by: &str,
    ) -> Result<u64, CatalogError> {
        loop {
            self.catch_up(state).await?;
            let commit = state.prepare(change.clone(), by, now_ms())?;
            match self.write(state, commit).await {
                Err(CatalogError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(state.version),
            }
        }
    }

    /// Writes the checkpoint of `state` and points `_last_checkpoint` at it.
    pub async fn write_checkpoint(&self, state: &State) -> Result<(), CatalogError> {
        let body = serde_json::to_vec(&state.checkpoint()).expect("a checkpoint serializes");
        self.store
            .put(&checkpoint_path(state.version), PutPayload::from(body))
            .await?;
        let hint = serde_json::to_vec(&LastCheckpoint {
            version: state.version,
        })
        .expect("serializes");
        self.store
            .put(&ObjectPath::from(LAST_CHECKPOINT), PutPayload::from(hint))
            .await?;
        Ok(())
    }
}

fn now_ms() -> u64 {
    sink::model::id::unix_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests;
