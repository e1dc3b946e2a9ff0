//! `query log`: the click and conversion log, newest first — each visit or click-through, or
//! each conversion report as it came (refused ones too), one row each, for looking at what
//! came in rather than at sums.

use arrow::record_batch::RecordBatch;
use chrono::Days;

use crate::session::Session;
use crate::{DateRange, Result};

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Visits and click-throughs.
    Clicks,
    /// Conversion reports.
    Conversions,
}

impl Log {
    /// `clicks` or `conversions`.
    pub fn parse(s: &str) -> Option<Log> {
        match s {
            "clicks" => Some(Log::Clicks),
            "conversions" => Some(Log::Conversions),
            _ => None,
        }
    }
}

/// What to list.
#[derive(Debug, Clone)]
pub struct LogRequest {
    pub log: Log,
    /// Events made within this range (by their own time).
    pub range: DateRange,
    pub campaign: Option<String>,
    /// Rows at most.
    pub limit: usize,
}

/// The log's SQL.
pub fn sql(req: &LogRequest) -> String {
    let r = &req.range;
    let campaign = |col: &str| {
        req.campaign.as_deref().map_or_else(
            || "true".to_owned(),
            |c| format!("{col} = {}", crate::sql_literal(c)),
        )
    };
    match req.log {
        Log::Clicks => format!(
            "SELECT ts, event_id, kind, click_id, campaign_id, traffic_source_id, landing_page_id,
                    offer_id, offer_link_id, network_id, CAST(cost_micros AS DOUBLE) / 1e6 AS cost, country,
                    device_type, os_family, browser_family, bot, ip
             FROM visits
             WHERE {} AND {} AND {}
             ORDER BY ts DESC, event_id DESC
             LIMIT {}",
            r.partitions(),
            r.times("ts"),
            campaign("campaign_id"),
            req.limit
        ),
        // Each report as it came, with its click's campaign; whether it counts is the feed's
        // to say (`query conversions` lists refused reports with why).
        Log::Conversions => format!(
            "SELECT c.ts, c.event_id, c.click_id, c.txid, c.status, c.conversion_type,
                    CAST(c.payout_micros AS DOUBLE) / 1e6 AS payout, c.method, c.auth,
                    c.auth_network_id, v.campaign_id, v.traffic_source_id, v.offer_id,
                    v.offer_link_id, v.country
             FROM conversions c
             LEFT JOIN visits v ON v.event_id = c.click_id AND v.kind = 'visit' AND {}
             WHERE {} AND {} AND {}
             ORDER BY c.ts DESC, c.event_id DESC
             LIMIT {}",
            // A visit precedes its conversions (a day of clock difference between nodes
            // allowed).
            r.to.map_or_else(
                || "true".to_owned(),
                |t| format!("v.dt <= '{}'", t.checked_add_days(Days::new(1)).unwrap_or(t))
            ),
            r.partitions().replace("dt ", "c.dt "),
            r.times("c.ts"),
            campaign("v.campaign_id"),
            req.limit,
        ),
    }
}

/// Runs the log.
pub async fn run(session: &Session, req: &LogRequest) -> Result<Vec<RecordBatch>> {
    Ok(session.ctx.sql(&sql(req)).await?.collect().await?)
}
