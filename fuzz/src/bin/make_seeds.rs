//! Writes the seed corpora under `fuzz/seeds/<target>/` (run by `scripts/fuzz.sh seeds`):
//! requests like the edge's tests send, postback parameters, query strings, templates, and
//! small WAL segments written by the real writer.

use std::path::Path;

use clicktracker_fuzz::{POSTBACK_TOKEN, segment, wal_records};

const CID: &str = "0167a15c98772c0004000001";

fn write(dir: &Path, target: &str, seeds: &[Vec<u8>]) {
    let dir = dir.join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:02}")), s).expect("write a seed");
    }
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let camp = "/c/5aaea5a02d38914cfd2ad8c1";
    let post = |body: &str| {
        format!(
            "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let http = [
        format!("GET {camp}?utm_source=a%20b&utm_medium=x&cost=1.5 HTTP/1.1\r\nHost: t\r\nAccept-Language: en\r\n\r\n"),
        format!("GET {camp}?utm_source=blog&utm_content=hero HTTP/1.1\r\nHost: t\r\nUser-Agent: Mozilla/5.0\r\nReferer: https://blog.example.com/\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: keep-alive\r\n\r\n"),
        "HEAD /c/demo-lp?utm_source=push HTTP/1.1\r\nHost: t\r\n\r\n".into(),
        format!("GET /click/2?cid={CID} HTTP/1.1\r\nHost: t\r\nCookie: ct_demo-lp=AAAA\r\n\r\n"),
        post(&format!("cid={CID}&payout=92.4")),
        format!("GET /546b17a70bf18e81647d8950/a.gif?c=1&h={CID}&a=92.4 HTTP/1.0\r\n\r\n"),
        format!("GET /p.gif?cid={CID}&payout=%2D1&txid=%0D%0A HTTP/1.1\r\nHost: t\r\n\r\n"),
        "GET http://t/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into(),
        "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".into(),
        "POST /postback HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\na=1".into(),
        "DELETE /postback HTTP/1.1\r\nHost: t\r\n\r\n".into(),
    ];
    write(&out, "http_request", &http.map(String::into_bytes));
    let postback = [
        format!("cid={CID}&payout=92.4&txid=t-1&status=approved&type=sale"),
        format!("cid={CID}&token={POSTBACK_TOKEN}&network=net-locked&payout=-3"),
        format!("cid={CID}&token=wrong&payout=0.000001"),
        format!("network=net-free&cid={}&payout=1e3", CID.to_uppercase()),
        format!("t%6Fken={POSTBACK_TOKEN}&&token&cid=%30167a15c98772c0004000001&status=%0D%0A"),
    ];
    write(&out, "postback", &postback.map(String::into_bytes));
    let queries = [
        "/c/x?utm_source=a%20b&utm_medium=r%26d&&flag&token=abc",
        "t%6Fken=abc&&token&tokens=1",
        "a+b=%zz%4&%E2%82%AC=%00%0D%0A",
    ];
    write(
        &out,
        "query_string",
        &queries.map(|q| q.as_bytes().to_vec()),
    );
    let templates = [
        "https://offers.example.com/drip?aff_sub={click_id}&src={source}&medium={var_2}\0my blog\0r&d\r\nSet-Cookie: x",
        "https://trial.example.com/start?subid={subid}&campaign={campaign_id}&kw={target}#{ts}\0a b\0\u{e9}",
        "http://127.0.0.1:9/landing\0unused",
        "https://[::1]:8443/?c={country}&d={device}&ip={ip}&cost={cost}\0%0D%0A\0/\0?",
    ];
    write(&out, "template", &templates.map(|t| t.as_bytes().to_vec()));
    let dir = std::env::temp_dir().join(format!("clicktracker-seeds-{}", std::process::id()));
    let records = wal_records();
    // Segments, and changes to the target's own segment: `(offset u16 LE, xor u8)` each,
    // on the first fragment's checksum, length and type, and in the block-spanning record.
    let change = |at: &[(u16, u8)]| -> Vec<u8> {
        at.iter()
            .flat_map(|&(o, x)| [o.to_le_bytes()[0], o.to_le_bytes()[1], x])
            .collect()
    };
    let wal = [
        segment(&dir, &records),
        segment(&dir, &records[..4]),
        segment(&dir, &records[4..6]),
        change(&[(8, 1)]),
        change(&[(12, 0x80), (13, 1)]),
        change(&[(14, 3)]),
        change(&[(32_770, 0xff), (40_000, 0x10)]),
    ];
    let _ = std::fs::remove_dir_all(&dir);
    write(&out, "wal_replay", &wal);
}
