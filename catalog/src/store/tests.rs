use super::*;
use crate::file::File;
use object_store::memory::InMemory;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

const CATALOG: &str = r#"
[[traffic_sources]]
id = "ts"
params = { source = "utm_source" }

[[affiliate_networks]]
id = "net"
postback_token = "s3cret"

[[offers]]
id = "o1"
network = "net"
url = "https://offer.example/?s={click_id}"
payout = 2.5

[[offers]]
id = "o2"
url = "https://other.example/?s={click_id}"

[[landing_pages]]
id = "lp"
url = "https://lp.example/"

[[campaigns]]
id = "c1"
traffic_source = "ts"
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ { offer = "o1" } ]
"#;

fn sections(text: &str) -> Sections {
    File::parse(text).unwrap()
}

fn import(text: &str) -> Change {
    Change {
        replace: true,
        put: sections(text),
        delete: Deleted::default(),
    }
}

fn put_campaign(toml: &str) -> Change {
    Change {
        put: sections(toml),
        ..Change::default()
    }
}

#[test]
fn an_empty_store_is_version_zero() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let s = block_on(cs.load()).unwrap();
    assert_eq!((s.version, s.len(Kind::Campaigns)), (0, 0));
}

#[test]
fn an_import_round_trips_and_a_second_reader_follows_the_log() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(Arc::clone(&store));
    let mut writer = block_on(cs.load()).unwrap();
    assert_eq!(
        block_on(cs.change(&mut writer, import(CATALOG), "import")).unwrap(),
        1
    );
    let mut reader = block_on(cs.load()).unwrap();
    assert_eq!(reader, writer);
    assert_eq!(reader.sections(), sections(CATALOG));

    let change = put_campaign(
        "[[campaigns]]\nid = \"c2\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o2\" } ]\n",
    );
    block_on(cs.change(&mut writer, change, "api")).unwrap();
    let applied = block_on(cs.catch_up(&mut reader)).unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].put.campaigns[0].id, "c2");
    assert_eq!(reader, writer);
    assert!(block_on(cs.catch_up(&mut reader)).unwrap().is_empty());
}

#[test]
fn of_two_writers_of_one_version_only_one_wins() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let mut a = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut a, import(CATALOG), "import")).unwrap();
    let mut b = a.clone();
    let ca = a
        .prepare(put_campaign("[[campaigns]]\nid = \"ca\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o1\" } ]\n"), "a", 1)
        .unwrap();
    let cb = b
        .prepare(put_campaign("[[campaigns]]\nid = \"cb\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o1\" } ]\n"), "b", 2)
        .unwrap();
    block_on(cs.write(&mut a, ca)).unwrap();
    let e = block_on(cs.write(&mut b, cb)).unwrap_err();
    assert!(matches!(e, CatalogError::Conflict { version: 2 }), "{e}");
    assert_eq!(b.version, 1, "a refused write changes nothing");
    // `change` reads the winner's version and goes on top of it.
    let v = block_on(cs.change(
        &mut b,
        put_campaign("[[campaigns]]\nid = \"cb\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o1\" } ]\n"),
        "b",
    ))
    .unwrap();
    assert_eq!(v, 3);
    assert!(b.campaigns.contains_key("ca") && b.campaigns.contains_key("cb"));
}

#[test]
fn invalid_objects_and_dangling_references_are_refused_naming_object_and_field() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let e = s
        .prepare(
            put_campaign("[[campaigns]]\nid = \"c9\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"nope\" } ]\n"),
            "api",
            1,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("campaigns/c9.paths[0].offers[0].offer") && e.contains("nope"),
        "{e}"
    );
    let e = s
        .prepare(
            put_campaign("[[offers]]\nid = \"o1\"\nurl = \"ftp://x/\"\n"),
            "api",
            1,
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("offers/o1.url:"), "{e}");
    // An offer needs a url or links; a link's fields are named by their place.
    for (offer, field) in [
        (
            "[[offers]]\nid = \"o1\"\npayout = 1\n",
            "offers/o1.url: missing",
        ),
        (
            "[[offers]]\nid = \"o1\"\nlinks = [ { id = \"a\", url = \"https://x.example/\" }, { id = \"b\", url = \"ftp://x/\" } ]\n",
            "offers/o1.links[1].url:",
        ),
    ] {
        let e = s
            .prepare(put_campaign(offer), "api", 1)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(field), "{e}");
    }
    // Nothing was written.
    assert_eq!(block_on(cs.load()).unwrap(), s);
}

#[test]
fn deleting_what_is_used_or_absent_is_refused() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let delete = |kind: Kind, id: &str| {
        let mut d = Deleted::default();
        d.of_mut(kind).push(id.to_owned());
        Change {
            delete: d,
            ..Change::default()
        }
    };
    for (kind, id, by) in [
        (
            Kind::Offers,
            "o1",
            "campaigns/c1 (paths[0].offers[0].offer)",
        ),
        (
            Kind::LandingPages,
            "lp",
            "campaigns/c1 (paths[0].landing_page)",
        ),
        (Kind::TrafficSources, "ts", "campaigns/c1 (traffic_source)"),
        (Kind::AffiliateNetworks, "net", "offers/o1 (network)"),
    ] {
        match s.prepare(delete(kind, id), "api", 1) {
            Err(CatalogError::Referenced { by: b, .. }) => assert_eq!(b, by),
            other => panic!("{kind}/{id}: {other:?}"),
        }
    }
    assert!(matches!(
        s.prepare(delete(Kind::Campaigns, "c7"), "api", 1),
        Err(CatalogError::NotFound { .. })
    ));
    // Deleting the campaign first frees the rest; both in one commit works too.
    let mut both = delete(Kind::Campaigns, "c1");
    both.delete.offers.push("o1".into());
    block_on(cs.change(&mut s, both, "api")).unwrap();
    assert!(!s.offers.contains_key("o1") && s.campaigns.is_empty());
    // Their names stay for reports over the events they left; a new put takes them back.
    assert!(s.retired.contains_key("campaigns/c1") && s.retired.contains_key("offers/o1"));
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    assert!(s.retired.is_empty(), "{:?}", s.retired);
    assert_eq!(block_on(cs.load()).unwrap(), s);
}

#[test]
fn payouts_keep_their_history() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let first = s.ts_ms;
    std::thread::sleep(std::time::Duration::from_millis(3));
    block_on(cs.change(
        &mut s,
        put_campaign("[[offers]]\nid = \"o1\"\nnetwork = \"net\"\nurl = \"https://offer.example/?s={click_id}\"\npayout = 4\n"),
        "api",
    ))
    .unwrap();
    let h = &s.payouts["o1"];
    assert_eq!(h.len(), 2);
    assert_eq!((h[0].since_ms, h[0].payout), (first, 2.5));
    assert_eq!((h[1].since_ms, h[1].payout), (s.ts_ms, 4.0));
    // The history survives a checkpoint and a replacing import.
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let reread = block_on(cs.load()).unwrap();
    assert_eq!(reread.payouts["o1"].len(), 3);
    assert_eq!(reread, s);
}

#[test]
fn checkpoints_bound_what_a_reader_reads_and_the_hint_is_optional() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(Arc::clone(&store));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    for i in 0..CHECKPOINT_EVERY + 5 {
        let c = format!(
            "[[campaigns]]\nid = \"k{i}\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ {{ offer = \"o2\" }} ]\n"
        );
        block_on(cs.change(&mut s, put_campaign(&c), "api")).unwrap();
    }
    let cp = block_on(cs.latest_checkpoint()).unwrap().unwrap();
    assert_eq!(cp.version, CHECKPOINT_EVERY);
    block_on(store.delete(&ObjectPath::from(LAST_CHECKPOINT))).unwrap();
    assert_eq!(
        block_on(cs.latest_checkpoint()).unwrap().unwrap().version,
        CHECKPOINT_EVERY
    );
    // Commits the checkpoint covers are not read again: remove one, the load still works.
    block_on(store.delete(&log_path(50))).unwrap();
    assert_eq!(block_on(cs.load()).unwrap(), s);
}

#[test]
fn a_damaged_commit_is_named() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(Arc::clone(&store));
    block_on(store.put(
        &log_path(1),
        PutPayload::from_static(b"{\"version\": 1, \"ts"),
    ))
    .unwrap();
    let e = block_on(cs.load()).unwrap_err().to_string();
    assert!(e.contains("catalog/log/00000000000000000001.json"), "{e}");
    block_on(
        store.put(
            &log_path(1),
            PutPayload::from(
                serde_json::to_vec(&Commit {
                    version: 7,
                    ts_ms: 0,
                    by: String::new(),
                    replace: false,
                    put: Sections::default(),
                    delete: Deleted::default(),
                })
                .unwrap(),
            ),
        ),
    )
    .unwrap();
    let e = block_on(cs.load()).unwrap_err().to_string();
    assert!(e.contains("holds version 7"), "{e}");
}

#[test]
fn a_local_store_creates_each_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    let cs = CatalogStore::new(Arc::new(fs));
    let mut a = block_on(cs.load()).unwrap();
    let mut b = a.clone();
    let ca = a.prepare(import(CATALOG), "a", 1).unwrap();
    let cb = b.prepare(import(CATALOG), "b", 2).unwrap();
    block_on(cs.write(&mut a, ca)).unwrap();
    assert!(matches!(
        block_on(cs.write(&mut b, cb)),
        Err(CatalogError::Conflict { version: 1 })
    ));
    assert_eq!(block_on(cs.load()).unwrap(), a);
}

#[test]
fn a_change_that_contradicts_itself_is_refused() {
    let cs = CatalogStore::new(Arc::new(InMemory::new()));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let twice = put_campaign(
        "[[offers]]\nid = \"o3\"\nurl = \"https://x.example/\"\n[[offers]]\nid = \"o3\"\nurl = \"https://y.example/\"\n",
    );
    let e = s.prepare(twice, "api", 1).unwrap_err().to_string();
    assert!(e.starts_with("offers/o3: put twice"), "{e}");
    let mut both = put_campaign("[[offers]]\nid = \"o2\"\nurl = \"https://x.example/\"\n");
    both.delete.offers.push("o2".into());
    let e = s.prepare(both, "api", 1).unwrap_err().to_string();
    assert!(e.starts_with("offers/o2: both put and deleted"), "{e}");
    // A campaign put in the same change as the deletion of its offer: dangling.
    let mut dangling = put_campaign(
        "[[campaigns]]\nid = \"c5\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o2\" } ]\n",
    );
    dangling.delete.offers.push("o2".into());
    let e = s.prepare(dangling, "api", 1).unwrap_err().to_string();
    assert!(
        e.starts_with("campaigns/c5.paths[0].offers[0].offer"),
        "{e}"
    );
    // The campaign that used the offer is replaced in the same change: the delete is fine.
    let mut moved = put_campaign(
        "[[campaigns]]\nid = \"c1\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o2\" } ]\n",
    );
    moved.delete.offers.push("o1".into());
    block_on(cs.change(&mut s, moved, "api")).unwrap();
    assert!(!s.offers.contains_key("o1"));
}

#[test]
fn a_damaged_checkpoint_is_read_around_from_the_log() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(Arc::clone(&store));
    let mut s = block_on(cs.load()).unwrap();
    block_on(cs.change(&mut s, import(CATALOG), "import")).unwrap();
    let c2 = put_campaign(
        "[[campaigns]]\nid = \"c2\"\ntraffic_source = \"ts\"\n[[campaigns.paths]]\noffers = [ { offer = \"o2\" } ]\n",
    );
    block_on(cs.change(&mut s, c2, "api")).unwrap();
    for bad in [
        &b"{\"version\": 1, \"ts"[..],
        b"{\"version\": 9, \"ts_ms\": 0, \"catalog\": {}}",
    ] {
        block_on(store.put(&checkpoint_path(1), PutPayload::from(bad.to_vec()))).unwrap();
        assert_eq!(block_on(cs.load()).unwrap(), s);
        let (v, sections) = block_on(cs.load_sections()).unwrap();
        assert_eq!((v, sections.campaigns.len()), (2, 2));
    }
}

#[test]
fn a_commit_found_already_written_is_the_writers_own_when_it_is_the_same() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cs = CatalogStore::new(Arc::clone(&store));
    let mut a = block_on(cs.load()).unwrap();
    let commit = a.prepare(import(CATALOG), "a", 5).unwrap();
    // The put was made, but its answer lost: the same commit is already there.
    let body = serde_json::to_vec(&commit).unwrap();
    block_on(store.put(&log_path(1), PutPayload::from(body))).unwrap();
    block_on(cs.write(&mut a, commit)).unwrap();
    assert_eq!(a.version, 1);
    // Another writer's commit there is a conflict.
    let mut b = State::default();
    let other = b.prepare(import(CATALOG), "b", 6).unwrap();
    assert!(matches!(
        block_on(cs.write(&mut b, other)),
        Err(CatalogError::Conflict { version: 1 })
    ));
}
