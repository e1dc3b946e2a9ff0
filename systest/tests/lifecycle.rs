//! The conversion lifecycle end to end (docs/query.md "Statuses"): scripted postback streams
//! through the real edge — lead → sale → chargeback, late and repeated reports, numeric and
//! unknown statuses through a network's `status_map`, each duplicate policy, upsells — and
//! the numbers `query report` makes of them, one rule per test.

use systest as common;

use std::collections::BTreeMap;

use common::{Edge, block_on};
use query::report::{ReportRequest, STATUS_COLUMNS};
use query::{Session, SessionOptions, dims, names::Names};

/// One campaign per network; every offer's default payout is 1.00.
const CONFIG: &str = r#"
[server]
node_id = 3

[[traffic_sources]]
id = "ts"

[[affiliate_networks]]
id = "words"

[[affiliate_networks]]
id = "codes"
status_map = { "1" = "lead", "2" = "sale", "3" = "rejected", "4" = "chargeback", "5" = "rebill", "Approved" = "pending" }

[[affiliate_networks]]
id = "once"
duplicates = "once"

[[affiliate_networks]]
id = "every"
duplicates = "every"

[[affiliate_networks]]
id = "add"
duplicates = "add"

[[affiliate_networks]]
id = "tokened"
postback_token = "tok-0123456789"
pixels = "payout"

[[offers]]
id = "o-words"
network = "words"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[offers]]
id = "o-codes"
network = "codes"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[offers]]
id = "o-once"
network = "once"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[offers]]
id = "o-every"
network = "every"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[offers]]
id = "o-add"
network = "add"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[offers]]
id = "o-tokened"
network = "tokened"
url = "https://offer.example/?s={click_id}"
payout = 1.0

[[campaigns]]
id = "words"
traffic_source = "ts"
category = "REFERRAL"
  [[campaigns.paths]]
  offers = [ { offer = "o-words" } ]

[[campaigns]]
id = "codes"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o-codes" } ]

[[campaigns]]
id = "once"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o-once" } ]

[[campaigns]]
id = "every"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o-every" } ]

[[campaigns]]
id = "add"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o-add" } ]

[[campaigns]]
id = "tokened"
traffic_source = "ts"
  [[campaigns.paths]]
  offers = [ { offer = "o-tokened" } ]
"#;

/// A report in order: (txid, status, payout) — `None` leaves the parameter out; the status
/// `PIXEL` sends a pixel (no txid, no status) instead of a postback. Postbacks to the
/// `tokened` campaign's network carry its token.
type Stream = &'static [(
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
)];

/// What the report says of a campaign: conversions, revenue in cents, and the status counts
/// by name.
#[derive(Debug, PartialEq)]
struct Seen {
    conversions: i64,
    revenue_cents: i64,
    statuses: BTreeMap<&'static str, i64>,
}

/// Sends each stream, on a click of its own, to `campaign`'s network; then the report's row,
/// and the conversion feed.
fn run(campaign: &str, streams: &[Stream]) -> (Seen, Vec<serde_json::Value>) {
    let (seen, feed, _) = run_with_revenue(campaign, streams);
    (seen, feed)
}

/// As [`run`], and the row's revenue in cents by final status (`revenue_sales`,
/// `revenue_rejected`, …), by the status column's name, where not 0.
fn run_with_revenue(
    campaign: &str,
    streams: &[Stream],
) -> (Seen, Vec<serde_json::Value>, BTreeMap<&'static str, i64>) {
    let mut e = Edge::with_config("legacy", CONFIG);
    let mut c = e.connect();
    for stream in streams {
        c.send(&format!(
            "GET /c/{campaign} HTTP/1.1\r\nHost: t\r\nUser-Agent: Mozilla/5.0\r\n\r\n"
        ));
        let r = c.response();
        assert_eq!(r.status, 302, "{}", e.log());
        let loc = r.header("Location").unwrap();
        let click = loc[loc.len() - 24..].to_owned();
        for (txid, status, payout) in stream.iter() {
            let mut q = format!("cid={click}");
            if *status == Some(PIXEL) {
                q.push_str(&format!("&payout={}", payout.unwrap_or("0")));
                c.send(&format!("GET /p.gif?{q} HTTP/1.1\r\nHost: t\r\n\r\n"));
                assert_eq!(c.response().status, 200, "{q}");
                continue;
            }
            for (k, v) in [("txid", txid), ("status", status), ("payout", payout)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={v}"));
                }
            }
            if campaign == "tokened" {
                q.push_str("&network=tokened&token=tok-0123456789");
            }
            c.send(&format!("GET /postback?{q} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!(c.response().status, 200, "{q}");
        }
    }
    e.stop();
    let store = e.store_url();
    let names = Names::parse(CONFIG).unwrap();
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let req = ReportRequest {
        dims: dims::parse("campaign").unwrap(),
        ..Default::default()
    };
    let report = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
    assert_eq!(report.rows.len(), 1, "{:?}", report.rows);
    let row = &report.rows[0];
    let mut feed = Vec::new();
    let all = query::feed::FeedRequest::default();
    block_on(query::feed::run(&session, &all, Some(&names), &mut feed)).unwrap();
    let feed = String::from_utf8(feed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen = Seen {
        conversions: row.figures.conversions,
        revenue_cents: query::output::cents(row.figures.revenue_micros),
        statuses: STATUS_COLUMNS
            .iter()
            .zip(row.statuses.0)
            .filter(|&(_, n)| n != 0)
            .map(|(&(name, _), n)| (name, n))
            .collect(),
    };
    let revenue_by_status = STATUS_COLUMNS
        .iter()
        .zip(row.status_revenue.0)
        .filter(|&(_, micros)| micros != 0)
        .map(|(&(name, _), micros)| (name, query::output::cents(micros)))
        .collect();
    (seen, feed, revenue_by_status)
}

/// The feed's `payload.data` fields `final_status`, `payout` and `counts`, and the statuses
/// of its history, per conversion in time order.
fn settled(feed: &[serde_json::Value]) -> Vec<(String, f64, i64, Vec<String>)> {
    feed.iter()
        .map(|c| {
            let d = &c["payload"]["data"];
            (
                d["final_status"].as_str().unwrap_or("?").to_owned(),
                d["payout"].as_f64().unwrap(),
                d["counts"].as_i64().unwrap_or(-1),
                c["history"]
                    .as_array()
                    .map(|h| {
                        h.iter()
                            .map(|r| r["status"].as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn seen(conversions: i64, revenue_cents: i64, statuses: &[(&'static str, i64)]) -> Seen {
    Seen {
        conversions,
        revenue_cents,
        statuses: statuses.iter().copied().collect(),
    }
}

const T: Option<&str> = Some("T1");
const PIXEL: &str = "PIXEL";

#[test]
fn the_latest_report_of_the_final_stage_decides_a_conversion() {
    let (got, feed) = run(
        "words",
        &[
            // lead → sale: a sale at its payout.
            &[(T, Some("lead"), Some("2")), (T, Some("sale"), Some("20"))],
            // A lead after the sale does not undo it.
            &[(T, Some("sale"), Some("20")), (T, Some("lead"), Some("2"))],
            // lead → rejected: out.
            &[(T, Some("lead"), Some("2")), (T, Some("declined"), None)],
            // sale → chargeback: out.
            &[
                (T, Some("approved"), Some("20")),
                (T, Some("chargeback"), None),
            ],
            // A rejection reversed: in again.
            &[
                (T, Some("rejected"), None),
                (T, Some("Approved"), Some("7")),
            ],
            // Pending, or on hold: counted, at the offer's payout when it sent none.
            &[(T, Some("pending"), None)],
            &[(T, Some("HOLD"), Some("3"))],
            // A lead alone.
            &[(T, Some("lead"), Some("2"))],
        ],
    );
    assert_eq!(
        got,
        seen(
            6,
            20_00 + 20_00 + 7_00 + 1_00 + 3_00 + 2_00,
            &[
                ("sales", 3),
                ("pending", 2),
                ("leads", 1),
                ("rejected", 1),
                ("chargebacks", 1)
            ]
        )
    );
    // The feed: each conversion's final status, its payout and count (none for a chargeback),
    // and every report it had.
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut got = settled(&feed);
    got.sort_by(|a, b| a.3.cmp(&b.3));
    assert!(
        got.contains(&("sale".into(), 20.0, 1, s(&["sale", "lead"]))),
        "{got:?}"
    );
    assert!(
        got.contains(&("chargeback".into(), 0.0, 0, s(&["approved", "chargeback"]))),
        "{got:?}"
    );
    assert!(
        got.contains(&("sale".into(), 7.0, 1, s(&["rejected", "Approved"]))),
        "{got:?}"
    );
    assert!(
        got.contains(&("pending".into(), 1.0, 1, s(&["pending"]))),
        "{got:?}"
    );
    assert_eq!(got.len(), 8);
}

#[test]
fn a_sale_then_rejected_is_rejected_and_earns_nothing() {
    // sale → rejected: out of the conversions and the revenue, counted as rejected; what it
    // would have earned (the deciding report's payout, else the offer's default) shows as
    // `revenue_rejected`.
    let (got, feed, by_status) = run_with_revenue(
        "words",
        &[
            &[
                (T, Some("sale"), Some("15")),
                (T, Some("rejected"), Some("15")),
            ],
            &[
                (T, Some("approved"), Some("20")),
                (T, Some("declined"), None),
            ],
        ],
    );
    assert_eq!(got, seen(0, 0, &[("rejected", 2)]));
    assert_eq!(
        by_status,
        BTreeMap::from([("rejected", 15_00 + 1_00)]),
        "{feed:?}"
    );
    // The feed: each rejected, with no payout and counting as nothing, and both its reports.
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut got = settled(&feed);
    got.sort_by(|a, b| a.3.cmp(&b.3));
    assert_eq!(
        got,
        [
            ("rejected".to_owned(), 0.0, 0, s(&["approved", "declined"])),
            ("rejected".to_owned(), 0.0, 0, s(&["sale", "rejected"])),
        ]
    );
}

#[test]
fn a_networks_status_map_reads_its_codes_and_unknown_statuses_are_sales() {
    let (got, _) = run(
        "codes",
        &[
            &[(T, Some("1"), Some("2")), (T, Some("2"), Some("30"))],
            &[(T, Some("2"), Some("30")), (T, Some("4"), None)],
            &[(T, Some("3"), None)],
            &[(T, Some("5"), Some("9"))],
            // The map wins over the understood names, without case.
            &[(T, Some("APPROVED"), Some("4"))],
            // Neither mapped nor understood: a sale.
            &[(T, Some("whatever"), Some("6"))],
            // Absent: the edge stores the seed's default, `approved`, which this network's
            // map reads as pending.
            &[(T, None, Some("8"))],
        ],
    );
    assert_eq!(
        got,
        seen(
            5,
            30_00 + 9_00 + 4_00 + 6_00 + 8_00,
            &[
                ("sales", 2),
                ("rebills", 1),
                ("pending", 2),
                ("rejected", 1),
                ("chargebacks", 1)
            ]
        )
    );
}

/// The same streams under each policy: a network repeating a sale with another payout, a
/// lead then two sales, and an upsell (another txid) that is always another conversion.
const REPEATS: &[Stream] = &[
    &[(T, Some("sale"), Some("10")), (T, Some("sale"), Some("12"))],
    &[
        (T, Some("lead"), Some("1")),
        (T, Some("sale"), Some("5")),
        (T, Some("sale"), Some("5")),
    ],
    &[(T, None, Some("3")), (Some("T2"), None, Some("4"))],
];

#[test]
fn duplicates_replace_by_default() {
    assert_eq!(
        run("words", REPEATS).0,
        seen(4, 12_00 + 5_00 + 3_00 + 4_00, &[("sales", 4)])
    );
}

#[test]
fn duplicates_once_keeps_the_first_report() {
    assert_eq!(
        run("once", REPEATS).0,
        seen(4, 10_00 + 5_00 + 3_00 + 4_00, &[("sales", 4)])
    );
}

#[test]
fn duplicates_add_sums_the_payouts() {
    assert_eq!(
        run("add", REPEATS).0,
        seen(4, 22_00 + 10_00 + 3_00 + 4_00, &[("sales", 4)])
    );
}

#[test]
fn duplicates_every_counts_each_report() {
    let (got, feed) = run("every", REPEATS);
    assert_eq!(got, seen(6, 22_00 + 10_00 + 3_00 + 4_00, &[("sales", 6)]));
    // The feed says so too: one object per conversion, with what it counts as.
    let mut got = settled(&feed);
    got.sort_by(|a, b| a.1.total_cmp(&b.1));
    let counts: Vec<(f64, i64)> = got.iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(counts, [(3.0, 1), (4.0, 1), (10.0, 2), (22.0, 2)]);
}

#[test]
fn a_reversal_starts_afresh_and_a_rebill_on_the_sales_txid_adds_to_it() {
    let (got, feed) = run(
        "add",
        &[
            // Rejected, then approved again: the second sale alone, not both.
            &[
                (T, Some("sale"), Some("10")),
                (T, Some("rejected"), None),
                (T, Some("sale"), Some("10")),
            ],
            // A rebill on the sale's txid: one conversion, now a rebill, both payouts.
            &[
                (T, Some("sale"), Some("30")),
                (T, Some("rebill"), Some("30")),
            ],
            // rebill → rejected: out.
            &[(T, Some("rebill"), Some("9")), (T, Some("rejected"), None)],
        ],
    );
    assert_eq!(
        got,
        seen(
            2,
            10_00 + 60_00,
            &[("sales", 1), ("rebills", 1), ("rejected", 1)]
        )
    );
    let mut got = settled(&feed);
    got.sort_by(|a, b| a.1.total_cmp(&b.1));
    let summary: Vec<(&str, f64, i64)> = got.iter().map(|c| (c.0.as_str(), c.1, c.2)).collect();
    assert_eq!(
        summary,
        [("rejected", 0.0, 0), ("sale", 10.0, 1), ("rebill", 60.0, 1)]
    );
}

#[test]
fn reports_without_a_txid_are_one_conversion_per_click() {
    let (got, _) = run(
        "words",
        &[
            &[
                (None, Some("lead"), Some("2")),
                (None, Some("sale"), Some("4")),
            ],
            &[(None, None, Some("3")), (None, None, Some("5"))],
        ],
    );
    assert_eq!(got, seen(2, 4_00 + 5_00, &[("sales", 2)]));
}

#[test]
fn an_authenticated_report_outranks_any_stage_of_an_unauthenticated_one() {
    // The network takes pixels at their own payout, but a postback with its token outranks
    // them: the lead it reported stands against a later pixel "sale".
    let (got, _) = run(
        "tokened",
        &[
            &[
                (None, Some("lead"), Some("2")),
                (None, Some(PIXEL), Some("5")),
            ],
            &[(None, Some(PIXEL), Some("5"))],
        ],
    );
    assert_eq!(got, seen(2, 2_00 + 5_00, &[("leads", 1), ("sales", 1)]));
}

#[test]
fn custom_conversion_types_and_revenue_by_status_are_columns_of_their_own() {
    let mut e = Edge::with_config("legacy", CONFIG);
    let mut c = e.connect();
    // Five conversions on five clicks: two deposits (one written `Deposit`), an install, one
    // without a type, and a deposit that is rejected (out, as in `conversions`).
    for (txid, ty, status) in [
        ("A", Some("deposit"), "sale"),
        ("B", Some(" Deposit"), "sale"),
        ("C", Some("install"), "lead"),
        ("D", None, "sale"),
        ("E", Some("deposit"), "rejected"),
    ] {
        c.send("GET /c/words HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response();
        let loc = r.header("Location").unwrap();
        let click = loc[loc.len() - 24..].to_owned();
        let ty = ty.map_or(String::new(), |t| {
            format!("&type={}", t.replace(' ', "%20"))
        });
        c.send(&format!(
            "GET /postback?cid={click}&txid={txid}&status={status}{ty} HTTP/1.1\r\nHost: t\r\n\r\n"
        ));
        assert_eq!(c.response().status, 200);
    }
    e.stop();
    let store = e.store_url();
    let names = Names::parse(CONFIG).unwrap();
    let session = block_on(Session::open(&store, &SessionOptions::default())).unwrap();
    let req = ReportRequest {
        dims: dims::parse("campaign").unwrap(),
        ..Default::default()
    };
    let report = block_on(query::report::run(&session, &req, Some(&names))).unwrap();
    // The most frequent type first; a rejected deposit is not a deposit that counts.
    assert_eq!(report.types, ["deposit", "install"]);
    assert_eq!(report.rows[0].figures.conversions, 4);
    assert_eq!(report.rows[0].types, [2, 1]);
    assert_eq!(report.type_totals, [2, 1]);
    let dir = common::TempDir::new("types");
    let cfg = dir.write("edge.toml", CONFIG);
    let json = common::query_report(
        &store,
        &["--by", "campaign", "--config", cfg.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["rows"][0]["types"],
        serde_json::json!({"deposit": 2, "install": 1}),
        "{json}"
    );
    // Revenue by final status (each conversion earns its offer's default 1.00); a rejected
    // one shows what it would have earned, outside `revenue`.
    let row = &v["rows"][0];
    assert_eq!(row["revenue"], 4.0, "{json}");
    assert_eq!(
        (
            &row["revenue_sales"],
            &row["revenue_leads"],
            &row["revenue_rejected"]
        ),
        (
            &serde_json::json!(3.0),
            &serde_json::json!(1.0),
            &serde_json::json!(1.0)
        ),
        "{json}"
    );
    assert_eq!(
        report.rows[0].status_revenue.0,
        [1_000_000, 3_000_000, 0, 0, 1_000_000, 0]
    );
    // The feed names the campaign's category, as the seed's payload does.
    let mut feed = Vec::new();
    let all = query::feed::FeedRequest::default();
    block_on(query::feed::run(&session, &all, Some(&names), &mut feed)).unwrap();
    let first: serde_json::Value =
        serde_json::from_slice(feed.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["destination"]["category"], "REFERRAL", "{first}");
    let out = std::process::Command::new(common::query_bin())
        .args(["report", "--quiet", "--format", "csv", "--store", &store])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",type:deposit,type:install"),
        "{csv}"
    );
}
