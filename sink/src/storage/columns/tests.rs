use super::*;
use crate::model::id::EventId;
use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use std::net::{IpAddr, Ipv4Addr};

pub(crate) fn visit(ts_ms: u64, n: u32) -> Event {
    let mut e = Event::new(
        EventKind::Visit,
        EventId::new(ts_ms, 7, 1, n),
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        b"",
        256,
    );
    e.push(Field::Method, b"GET");
    e.push(Field::Target, b"/c/camp?utm_source=my+blog&x=%41");
    e.push(Field::Host, b"t.example");
    e.push(Field::UserAgent, b"Mozilla/5.0");
    e.push(Field::CampaignId, b"camp");
    e.push(Field::TrafficSourceId, b"ts");
    e.push(Field::OfferId, b"offer");
    e.push(Field::Location, b"https://o.example/?s=1");
    e.push_remapped([(&b"source"[..], &b"my blog"[..])]);
    e.cost_micros = 50_000;
    e.path_index = Some(1);
    e
}

pub(crate) fn postback(ts_ms: u64, n: u32, payout: Option<i64>) -> Event {
    let mut e = Event::new(
        EventKind::Postback,
        EventId::new(ts_ms, 7, 0, n),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        b"",
        128,
    );
    e.push(Field::Method, b"GET");
    e.push(Field::Target, b"/postback?cid=0167a15c98772c0004000001");
    e.push(Field::ClickId, b"0167a15c98772c0004000001");
    e.push(Field::TxId, format!("tx-{n}").as_bytes());
    e.push(Field::Status, b"approved");
    e.payout_micros = payout;
    e
}

#[test]
fn visits_batch_has_the_spec_columns_and_values() {
    let mut b = Builder::new(TableKind::Visits);
    b.append(&visit(1_795_766_399_999, 1));
    b.append(&visit(1_795_766_400_000, 2));
    let batch = b.finish().unwrap();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(batch.schema(), TableKind::Visits.schema());
    for col in [
        "event_id",
        "ts",
        "kind",
        "campaign_id",
        "traffic_source_id",
        "path_index",
        "landing_page_id",
        "offer_id",
        "offer_link_id",
        "network_id",
        "cost_micros",
        "method",
        "host",
        "url",
        "referer",
        "ip",
        "forwarded_for",
        "ua",
        "lang",
        "query",
        "remapped",
        "country",
        "geoname_id",
        "tz",
        "browser_family",
        "browser_major",
        "browser_minor",
        "browser_patch",
        "os_family",
        "os_major",
        "os_minor",
        "os_patch",
        "os_patch_minor",
        "device_family",
        "device_brand",
        "device_model",
        "device_type",
        "mobile",
        "bot",
        "node_id",
    ] {
        assert!(batch.column_by_name(col).is_some(), "missing column {col}");
    }
    let s = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    assert_eq!(
        s("event_id").value(0),
        EventId::new(1_795_766_399_999, 7, 1, 1).to_string()
    );
    assert_eq!(s("kind").value(1), "visit");
    assert_eq!(s("campaign_id").value(0), "camp");
    assert_eq!(s("ip").value(0), "8.8.8.8");
    assert!(s("referer").is_null(0), "absent facts are null");
    assert!(s("country").is_null(0));
    let ts = batch
        .column_by_name("ts")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.value(1), 1_795_766_400_000);
    let cost = batch
        .column_by_name("cost_micros")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(cost.value(0), 50_000);
    let path = batch
        .column_by_name("path_index")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(path.value(0), 1);
    let node = batch
        .column_by_name("node_id")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(node.value(0), 7);
    let query = batch
        .column_by_name("query")
        .unwrap()
        .as_any()
        .downcast_ref::<MapArray>()
        .unwrap();
    let entries = query.value(0);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    assert_eq!((keys.value(0), values.value(0)), ("utm_source", "my blog"));
    assert_eq!((keys.value(1), values.value(1)), ("x", "A"));
    let remapped = batch
        .column_by_name("remapped")
        .unwrap()
        .as_any()
        .downcast_ref::<MapArray>()
        .unwrap();
    assert_eq!(
        remapped.value(0).column(1).as_string::<i32>().value(0),
        "my blog"
    );
}

#[test]
fn conversions_batch() {
    let mut b = Builder::new(TableKind::Conversions);
    b.append(&postback(1_795_766_399_999, 1, Some(92_400_000)));
    b.append(&postback(1_795_766_399_999, 2, None));
    let batch = b.finish().unwrap();
    assert_eq!(batch.schema(), TableKind::Conversions.schema());
    let s = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .clone()
    };
    assert_eq!(s("click_id").value(0), "0167a15c98772c0004000001");
    assert_eq!(s("method").value(0), "postback");
    assert_eq!(s("http_method").value(0), "GET");
    assert_eq!(s("txid").value(1), "tx-2");
    let payout = batch
        .column_by_name("payout_micros")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(payout.value(0), 92_400_000);
    assert!(payout.is_null(1));
    assert_eq!(b.len(), 0, "the builder starts over");
    assert_eq!(b.finish().unwrap().num_rows(), 0);
}

/// The `query` map of each row, as (key, value) pairs.
fn query_maps(batch: &arrow::record_batch::RecordBatch) -> Vec<Vec<(String, String)>> {
    let m = batch
        .column_by_name("query")
        .unwrap()
        .as_any()
        .downcast_ref::<MapArray>()
        .unwrap();
    (0..m.len())
        .map(|i| {
            let entry = m.value(i);
            let keys = entry.column(0).as_string::<i32>();
            let values = entry.column(1).as_string::<i32>();
            (0..entry.len())
                .map(|j| (keys.value(j).to_owned(), values.value(j).to_owned()))
                .collect()
        })
        .collect()
}

#[test]
fn a_repeated_query_key_keeps_its_first_value() {
    let mut b = Builder::new(TableKind::Visits);
    for target in [
        "/c/x?k=1&k=2&j=3&%6B=4",
        // Many keys, repeated: the set path.
        &format!(
            "/c/x?{}",
            (0..200)
                .map(|i| format!("k{}={i}", i % 50))
                .collect::<Vec<_>>()
                .join("&")
        ),
    ] {
        let mut e = visit(1_795_766_399_999, 1);
        e.push(Field::Target, target.as_bytes());
        b.append(&e);
    }
    let batch = b.finish().unwrap();
    let maps = query_maps(&batch);
    assert_eq!(
        maps[0],
        [("k".into(), "1".into()), ("j".into(), "3".into())],
        "keys are compared decoded"
    );
    assert_eq!(maps[1].len(), 50);
    assert_eq!(maps[1][7], ("k7".into(), "7".into()));
    assert_eq!(
        batch
            .column_by_name("url")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "/c/x?k=1&k=2&j=3&%6B=4",
        "every value stays in the url"
    );
}

#[test]
fn the_network_policy_and_a_conversions_auth_are_columns() {
    let mut b = Builder::new(TableKind::Visits);
    let mut e = visit(1_795_766_399_999, 1);
    e.network_policy = Some(crate::model::event::NetworkPolicy {
        token: true,
        pixels: crate::model::event::Pixels::DefaultPayout,
    });
    b.append(&e);
    b.append(&visit(1_795_766_399_999, 2));
    let batch = b.finish().unwrap();
    let token = batch.column_by_name("network_token").unwrap().as_boolean();
    assert_eq!((token.value(0), token.is_null(1)), (true, true));
    let pixels = batch
        .column_by_name("network_pixels")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(
        (pixels.value(0), pixels.is_null(1)),
        ("default_payout", true)
    );

    let mut b = Builder::new(TableKind::Conversions);
    let mut p = postback(1_795_766_399_999, 1, None);
    p.auth = crate::model::event::Auth::Token;
    p.push(Field::NetworkId, b"net-a");
    b.append(&p);
    b.append(&postback(1_795_766_399_999, 2, None));
    let batch = b.finish().unwrap();
    let auth = batch.column_by_name("auth").unwrap().as_string::<i32>();
    assert_eq!((auth.value(0), auth.value(1)), ("token", "none"));
    let net = batch
        .column_by_name("auth_network_id")
        .unwrap()
        .as_string::<i32>();
    assert_eq!((net.value(0), net.is_null(1)), ("net-a", true));
}

#[test]
fn bytes_that_are_not_utf8_are_replaced_and_the_rest_of_the_column_kept() {
    let mut b = Builder::new(TableKind::Visits);
    b.append(&visit(1_795_766_399_999, 1));
    let mut bad = visit(1_795_766_399_999, 2);
    bad.push(Field::UserAgent, b"Mozilla/\xff\xfe 5.0 \xe2\x82");
    // `%C3` alone decodes to half a character; `%C3%A9` to a whole one.
    // `%C3` then `%A9` as two values: the column is UTF-8 as a whole, each value is not.
    bad.push(
        Field::Target,
        b"/c/camp?q=caf%C3&r=caf%C3%A9&%FF=x&s=%C3&t=%A9",
    );
    bad.push_remapped([(&b"source"[..], &b"bl\xc3og"[..])]);
    bad.push(Field::Referer, b"");
    b.append(&bad);
    b.append(&visit(1_795_766_399_999, 3));
    let batch = b.finish().unwrap();
    let ua = batch.column_by_name("ua").unwrap().as_string::<i32>();
    assert_eq!(ua.value(0), "Mozilla/5.0");
    assert_eq!(ua.value(1), "Mozilla/\u{fffd}\u{fffd} 5.0 \u{fffd}");
    assert_eq!(ua.value(2), "Mozilla/5.0");
    let url = batch.column_by_name("url").unwrap().as_string::<i32>();
    assert_eq!(
        url.value(1),
        "/c/camp?q=caf%C3&r=caf%C3%A9&%FF=x&s=%C3&t=%A9"
    );
    let referer = batch.column_by_name("referer").unwrap();
    assert_eq!(referer.null_count(), 3);
    let maps = query_maps(&batch);
    assert_eq!(
        maps[1],
        [
            ("q".into(), "caf\u{fffd}".into()),
            ("r".into(), "café".into()),
            ("\u{fffd}".into(), "x".into()),
            ("s".into(), "\u{fffd}".into()),
            ("t".into(), "\u{fffd}".into())
        ]
    );
    assert_eq!(maps[0], maps[2]);
    let remapped = batch
        .column_by_name("remapped")
        .unwrap()
        .as_any()
        .downcast_ref::<MapArray>()
        .unwrap()
        .value(1);
    assert_eq!(
        remapped.column(1).as_string::<i32>().value(0),
        "bl\u{fffd}og"
    );
}

#[test]
fn a_builder_reused_after_finish_builds_the_same_batches_as_fresh_ones() {
    let mut reused = Builder::new(TableKind::Visits);
    for round in 0..3u32 {
        let events: Vec<Event> = (0..=round)
            .map(|n| visit(1_795_766_399_999, round * 10 + n))
            .collect();
        let mut fresh = Builder::new(TableKind::Visits);
        for e in &events {
            reused.append(e);
            fresh.append(e);
        }
        assert_eq!(reused.len(), events.len());
        assert_eq!(reused.finish().unwrap(), fresh.finish().unwrap());
        assert!(reused.is_empty());
    }
}
