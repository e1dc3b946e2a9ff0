//! Cost updates after the fact (`query costs set`): a source that reports what a campaign
//! really cost over a time range, later. Each update is an event kept in the store
//! (`{store}/cost_updates/{at_ms}-{campaign}.json`, one object each, never rewritten), and
//! reports recompute from them: the visits of that campaign within the range share the
//! update's total evenly instead of their own cost. Where updates overlap, a visit takes the
//! latest one that covers it.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::session::Session;
use crate::{QueryError, Result};

const PREFIX: &str = "cost_updates";

/// One cost update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostUpdate {
    pub campaign: String,
    /// The range of visit times it covers, Unix ms, `[from, to)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// What the visits in range cost in all, micro-units.
    pub cost_micros: i64,
    /// When it was made (later updates win where they overlap).
    pub at_ms: i64,
}

/// Records `u` in the store (a new object; an update is never replaced).
pub async fn set(store: &Arc<dyn ObjectStore>, u: &CostUpdate) -> Result<()> {
    if u.from_ms >= u.to_ms {
        return Err(QueryError::Invalid(
            "a cost update's --from must be before its --to".into(),
        ));
    }
    if u.cost_micros < 0 {
        return Err(QueryError::Invalid("a cost cannot be negative".into()));
    }
    let name = format!(
        "{PREFIX}/{:013}-{}-{:08x}.json",
        u.at_ms,
        u.campaign,
        fastrand::u32(..)
    );
    let body = serde_json::to_vec(u).map_err(std::io::Error::from)?;
    store
        .put_opts(
            &Path::from(name),
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await?;
    Ok(())
}

/// Every update in the store, oldest first.
pub async fn load(store: &Arc<dyn ObjectStore>) -> Result<Vec<CostUpdate>> {
    let prefix = Path::from(PREFIX);
    let mut metas = Vec::new();
    let mut list = store.list(Some(&prefix));
    while let Some(m) = list.next().await {
        let m = m?;
        if m.location.as_ref().ends_with(".json") {
            metas.push(m.location);
        }
    }
    let mut out = Vec::with_capacity(metas.len());
    for path in metas {
        let bytes = store.get(&path).await?.bytes().await?;
        let u: CostUpdate = serde_json::from_slice(&bytes).map_err(|e| {
            QueryError::Invalid(format!("the cost update {path} does not parse: {e}"))
        })?;
        out.push(u);
    }
    out.sort_by(|a, b| (a.at_ms, &a.campaign).cmp(&(b.at_ms, &b.campaign)));
    Ok(out)
}

/// SQL: whether the visit row (columns `campaign_id`, `ts`) falls in `u`'s range.
fn covers(u: &CostUpdate) -> String {
    format!(
        "(campaign_id = {} AND ts >= to_timestamp_millis({}) AND ts < to_timestamp_millis({}))",
        crate::sql_literal(&u.campaign),
        u.from_ms,
        u.to_ms
    )
}

/// SQL conditions: update `i` decides a visit's cost when it covers the visit and no later
/// update does.
fn deciding(updates: &[CostUpdate]) -> Vec<String> {
    (0..updates.len())
        .map(|i| {
            let mut c = covers(&updates[i]);
            for later in &updates[i + 1..] {
                if later.campaign == updates[i].campaign {
                    c.push_str(&format!(" AND NOT {}", covers(later)));
                }
            }
            c
        })
        .collect()
}

/// The SQL for a visit's cost with `updates` applied (over the visits' columns `campaign_id`,
/// `ts` and `cost_micros`): the update's total over the visits it decides, counted in
/// `session`. `None` without updates.
pub async fn visit_cost_sql(session: &Session, updates: &[CostUpdate]) -> Result<Option<String>> {
    if updates.is_empty() {
        return Ok(None);
    }
    let conds = deciding(updates);
    let counts_sql = format!(
        "SELECT {} FROM visits WHERE kind = 'visit'",
        conds
            .iter()
            .map(|c| format!("CAST(sum(CASE WHEN {c} THEN 1 ELSE 0 END) AS BIGINT)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let batches = session.ctx.sql(&counts_sql).await?.collect().await?;
    let counts: Vec<i64> = (0..conds.len())
        .map(|i| {
            batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .map(|b| {
                    let a = b.column(i).as_primitive::<Int64Type>();
                    if a.is_null(0) { 0 } else { a.value(0) }
                })
                .sum()
        })
        .collect();
    let mut sql = String::from("CASE");
    for ((u, cond), n) in updates.iter().zip(&conds).zip(counts) {
        if n > 0 {
            // Spread evenly, to the micro-unit.
            let each = (u.cost_micros + n / 2) / n;
            sql.push_str(&format!(" WHEN {cond} THEN CAST({each} AS BIGINT)"));
        }
    }
    if sql == "CASE" {
        return Ok(None);
    }
    sql.push_str(" ELSE cost_micros END");
    Ok(Some(sql))
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS` (UTC; a space may stand
/// for the `T`) as Unix ms, naming `flag` in the error.
pub fn parse_time(flag: &str, s: &str) -> Result<i64> {
    let t = s.trim().replace(' ', "T");
    let parsed = chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M"))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| {
            QueryError::Invalid(format!(
                "bad {flag} {s:?}: expected a UTC time as YYYY-MM-DD[THH:MM[:SS]]"
            ))
        })?;
    Ok(parsed.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_updates_win_where_they_overlap() {
        let u = |campaign: &str, from_ms, to_ms, at_ms| CostUpdate {
            campaign: campaign.into(),
            from_ms,
            to_ms,
            cost_micros: 1,
            at_ms,
        };
        let d = deciding(&[u("a", 0, 10, 1), u("b", 0, 10, 2), u("a", 5, 20, 3)]);
        assert!(
            d[0].contains("NOT") && d[0].matches("NOT").count() == 1,
            "{}",
            d[0]
        );
        assert!(!d[1].contains("NOT"), "{}", d[1]);
        assert!(!d[2].contains("NOT"), "{}", d[2]);
        assert_eq!(
            parse_time("--from", "2026-12-01").unwrap(),
            1_796_083_200_000
        );
        assert_eq!(
            parse_time("--to", "2026-12-01 10:30").unwrap(),
            1_796_083_200_000 + 37_800_000
        );
        assert!(parse_time("--to", "yesterday").is_err());
    }
}
