//! The gateway's SQL layer on all three backends: SQLite (embedded), and real
//! PostgreSQL and MariaDB servers started by the test. The same checks run on each:
//! tenants and sealed keys, bucket ownership, overwrite and delete dropping references,
//! key order as S3 lists it (by UTF-8 bytes), conditional-write races with exactly one
//! winner, and multipart completion.

mod sqlservers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use client::Slice;
use ogw::catalog::{
    audit_refs, valid_version_id, Catalog, CatalogError, Entry, Layout, Listed, Object, ObjectInfo, Part, Versioning,
    WriteCondition,
};
use ogw::db::Db;
use ogw::secrets::MasterKey;
use proto::meta::Policy;
use proto::ExtentId;

const REPLICA3: Policy = Policy::Replica { n: 3 };

fn slice(extent: u64, len: u32) -> Slice {
    Slice { extent: ExtentId(extent), offset: extent * 1000, len, crc: extent as u32 }
}

fn object(key: &str, etag: &str, slices: Vec<Slice>) -> Object {
    Object {
        key: key.into(),
        size: slices.iter().map(|s| s.len as u64).sum(),
        etag: etag.into(),
        modified_ms: 1,
        info: ObjectInfo { content_type: Some("text/plain".into()), ..Default::default() },
        layout: Layout::Slices(slices),
        version: None,
    }
}

/// The keys of bucket `b1` in `[from, to)`, read through a listing's connection.
async fn keys_in(catalog: &Catalog, from: &[u8], inclusive: bool, to: Option<&[u8]>) -> Vec<String> {
    let objects = catalog.lister().await.unwrap().range("b1", from, inclusive, to, 100).await.unwrap();
    objects.into_iter().map(|o| o.key).collect()
}

async fn exercise(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::load_or_create(&dir.path().join("k")).unwrap();
    let catalog = Catalog::new(Db::connect(url).await.unwrap(), key);
    // Connecting again finds the schema in place.
    Db::connect(url).await.unwrap();

    // Tenants and keys.
    catalog.create_tenant("t1").await.unwrap();
    catalog.create_tenant("t2").await.unwrap();
    assert!(matches!(catalog.create_tenant("t1").await, Err(CatalogError::Invalid(_))));
    assert!(matches!(catalog.create_tenant("bad name").await, Err(CatalogError::Invalid(_))));
    catalog.add_key("t1", "AKIAONE", "secret-one-123").await.unwrap();
    assert!(matches!(catalog.add_key("nobody", "AKIATWO", "secret-two-123").await, Err(CatalogError::Invalid(_))));
    assert_eq!(catalog.key("AKIAONE").await.unwrap(), Some(("t1".into(), "secret-one-123".into())));
    assert_eq!(catalog.key("AKIANONE").await.unwrap(), None);

    // Buckets.
    catalog.create_bucket("t1", "b1", REPLICA3).await.unwrap();
    assert!(matches!(
        catalog.create_bucket("t1", "b1", REPLICA3).await,
        Err(CatalogError::BucketExists { owned_by_you: true })
    ));
    assert!(matches!(
        catalog.create_bucket("t2", "b1", REPLICA3).await,
        Err(CatalogError::BucketExists { owned_by_you: false })
    ));
    assert!(matches!(catalog.owned_bucket("t2", "b1").await, Err(CatalogError::NotOwner)));
    assert!(matches!(catalog.owned_bucket("t1", "nope").await, Err(CatalogError::NoSuchBucket)));
    assert_eq!(catalog.buckets("t1").await.unwrap().len(), 1);
    assert!(catalog.buckets("t2").await.unwrap().is_empty());

    // Overwrite and delete drop the old slices' references (what GC trusts).
    let none = WriteCondition::default();
    catalog.put_object("b1", &object("k", "e1", vec![slice(1, 10), slice(2, 20)]), &none).await.unwrap();
    catalog.put_object("b1", &object("k", "e2", vec![slice(3, 5)]), &none).await.unwrap();
    let o = catalog.object("b1", "k").await.unwrap().unwrap();
    assert_eq!((o.etag.as_str(), o.size, o.layout.named()), ("e2", 5, &[slice(3, 5)][..]));
    assert_eq!(o.info.content_type.as_deref(), Some("text/plain"));
    assert_eq!((live(&catalog, 1).await, live(&catalog, 2).await, live(&catalog, 3).await), (0, 0, 5));
    // What the console shows per bucket: one current object of 5 bytes; t2 has none.
    let big = vec![slice(9001, u32::MAX), slice(9002, u32::MAX)];
    catalog.put_object("b1", &object("k2", "e3", big), &none).await.unwrap();
    catalog.create_bucket("t2", "b2", REPLICA3).await.unwrap();
    let usage = catalog.bucket_usage().await.unwrap();
    let row = |t: &str, b: &str, objects, bytes| ogw::catalog::BucketUsage {
        tenant: t.into(),
        bucket: b.into(),
        objects,
        bytes,
        ..Default::default()
    };
    let bytes = 5 + 2 * u32::MAX as u64;
    assert_eq!(usage, vec![row("t1", "b1", 2, bytes), row("t2", "b2", 0, 0)], "sums past 32 bits");
    assert!(catalog.delete_object("b1", "k2").await.unwrap().found);
    catalog.delete_bucket("t2", "b2").await.unwrap();
    assert!(catalog.delete_object("b1", "k").await.unwrap().found);
    assert!(!catalog.delete_object("b1", "k").await.unwrap().found);
    assert_eq!(live(&catalog, 3).await, 0);

    // Keys come back in UTF-8 byte order on every backend.
    let mut keys = vec!["a", "a/b", "a/b/c", "ab", "b", "Z", "é", "ë/x", "\u{10348}", "~", "a b", "a+b"];
    for k in &keys {
        catalog.put_object("b1", &object(k, "e", vec![]), &none).await.unwrap();
    }
    keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let listed = keys_in(&catalog, b"", true, None).await;
    assert_eq!(listed, keys);
    let after_a = keys_in(&catalog, b"a", false, Some(b"b")).await;
    assert_eq!(after_a, vec!["a b", "a+b", "a/b", "a/b/c", "ab"]);
    // A listing's rows carry what a GET's row does, all but the slices (SQLite answers
    // a page as one JSON array: quotes, escapes and non-ASCII must come through).
    let mut rich = object("ë/rich \"q\" <x>&\\", "e-rich", vec![slice(7, 3)]);
    rich.info.user.insert("naïve".into(), "välue \u{10348} \"quoted\" \\ \n".into());
    rich.info.storage_class = Some(ogw::class::StorageClass::StandardIa);
    rich.info.checksum = Some(ogw::checksum::Checksum { algo: ogw::checksum::Algo::Crc32, value: "AAAAAA==".into() });
    rich.info.checksum_type = Some(ogw::checksum::Kind::FullObject);
    rich.info.parts = vec![5 << 20, u32::MAX as u64 + 7];
    rich.modified_ms = 1_700_000_000_123;
    catalog.put_object("b1", &rich, &none).await.unwrap();
    let all = catalog.lister().await.unwrap().range("b1", b"", true, None, 1000).await.unwrap();
    assert_eq!(all.len(), keys.len() + 1);
    for o in &all {
        let got = catalog.object("b1", &o.key).await.unwrap().expect("a listed key");
        assert!(o.layout.named().is_empty(), "a listing reads no slices");
        assert_eq!(
            (&o.key, o.size, &o.etag, o.modified_ms, &o.version, &o.info),
            (&got.key, got.size, &got.etag, got.modified_ms, &got.version, &got.info)
        );
    }
    assert!(all.iter().any(|o| o.info == rich.info && o.key == rich.key));
    // What ListObjects prints of each row (three fields of its info, read without the
    // rest) is what the whole row says.
    let printed = catalog.lister().await.unwrap().listed("b1", b"", true, None, 1000).await.unwrap();
    let expected: Vec<Listed> = all
        .iter()
        .map(|o| Listed {
            key: o.key.clone(),
            size: o.size,
            etag: o.etag.clone(),
            modified_ms: o.modified_ms,
            storage_class: o.info.storage_class,
            checksum: o.info.checksum.as_ref().map(|c| c.algo),
            checksum_type: o.info.checksum_type,
        })
        .collect();
    assert_eq!(printed, expected);
    assert!(printed.iter().any(|l| l.key == rich.key
        && (l.storage_class, l.checksum, l.checksum_type)
            == (rich.info.storage_class, Some(ogw::checksum::Algo::Crc32), rich.info.checksum_type)));
    let bounded = catalog.lister().await.unwrap().listed("b1", b"a", false, Some(b"b"), 3).await.unwrap();
    assert_eq!(bounded.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["a b", "a+b", "a/b"]);
    assert!(catalog.delete_object("b1", &rich.key).await.unwrap().found);
    assert!(matches!(catalog.delete_bucket("t1", "b1").await, Err(CatalogError::BucketNotEmpty)));
    assert!(matches!(catalog.delete_bucket("t2", "b1").await, Err(CatalogError::NotOwner)));

    // Conditional writes: of many concurrent writers, exactly one wins.
    let catalog = Arc::new(catalog);
    // Each round's writers write ETags no earlier round wrote (a writer that rewrote the
    // current ETag would rightly let the next If-Match writer win too).
    let race = |cond: WriteCondition, round: &'static str| {
        let catalog = catalog.clone();
        async move {
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let (catalog, cond) = (catalog.clone(), cond.clone());
                    tokio::spawn(async move {
                        catalog
                            .put_object("b1", &object("race", &format!("{round}{i}"), vec![slice(100 + i, 1)]), &cond)
                            .await
                    })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Ok(_) => won += 1,
                    Err(CatalogError::PreconditionFailed) => {}
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            won
        }
    };
    assert_eq!(race(WriteCondition { if_none_match_any: true, ..Default::default() }, "a").await, 1);
    let cur = catalog.object("b1", "race").await.unwrap().unwrap().etag;
    assert_eq!(race(WriteCondition { if_match: Some(cur.clone()), ..Default::default() }, "b").await, 1);
    assert_ne!(catalog.object("b1", "race").await.unwrap().unwrap().etag, cur);
    // If-Match on a key without an object: NoSuchKey, and nothing written; If-None-Match
    // with the current ETag: refused.
    let absent = WriteCondition { if_match: Some(cur.clone()), ..Default::default() };
    let r = catalog.put_object("b1", &object("absent", "x", vec![]), &absent).await;
    assert!(matches!(r, Err(CatalogError::NoSuchKey)), "{r:?}");
    assert!(catalog.object("b1", "absent").await.unwrap().is_none());
    let now = catalog.object("b1", "race").await.unwrap().unwrap().etag;
    let not_now = WriteCondition { if_none_match: Some(now), ..Default::default() };
    let r = catalog.put_object("b1", &object("race", "y", vec![]), &not_now).await;
    assert!(matches!(r, Err(CatalogError::PreconditionFailed)), "{r:?}");

    // Multipart: complete with parts 1 and 3; part 2 is named no more, the upload goes.
    let up = catalog.create_upload("b1", "mp", &ObjectInfo::default()).await.unwrap();
    for n in 1..=3u32 {
        let p = Part {
            num: n,
            size: 10,
            etag: format!("p{n}"),
            modified_ms: 1,
            info: ObjectInfo::default(),
            slices: vec![slice(200 + n as u64, 10)],
        };
        catalog.put_part(&up, &p).await.unwrap();
    }
    assert_eq!(catalog.parts(&up, 0, 10).await.unwrap().iter().map(|p| p.num).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(catalog.parts(&up, 1, 1).await.unwrap()[0].num, 2);
    assert_eq!(catalog.uploads("b1", "", ("", ""), 10).await.unwrap().len(), 1);
    let o = object("mp", "x-2", vec![slice(201, 10), slice(203, 10)]);
    catalog.complete_upload("b1", &up, &o, &none).await.unwrap();
    assert_eq!(catalog.object("b1", "mp").await.unwrap().unwrap().layout, o.layout);
    assert_eq!((live(&catalog, 201).await, live(&catalog, 202).await, live(&catalog, 203).await), (10, 0, 10));
    assert!(matches!(catalog.upload("b1", "mp", &up).await, Err(CatalogError::NoSuchUpload)));
    assert!(catalog.uploads("b1", "", ("", ""), 10).await.unwrap().is_empty());
    let up2 = catalog.create_upload("b1", "mp2", &ObjectInfo::default()).await.unwrap();
    let p = Part {
        num: 1,
        size: 7,
        etag: "q".into(),
        modified_ms: 1,
        info: ObjectInfo::default(),
        slices: vec![slice(300, 7)],
    };
    catalog.put_part(&up2, &p).await.unwrap();
    // A copy names its source's slices again.
    catalog.put_object("b1", &object("copy", "x-2", o.layout.named().to_vec()), &none).await.unwrap();
    assert_eq!(live(&catalog, 300).await, 7);
    catalog.abort_upload(&up2).await.unwrap();
    assert!(matches!(catalog.abort_upload(&up2).await, Err(CatalogError::NoSuchUpload)));

    // What every write and delete above recorded of the extents they name matches what
    // the rows name.
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);
    for (extent, bytes) in [(1, 0), (2, 0), (3, 0), (201, 20), (202, 0), (203, 20), (300, 0)] {
        assert_eq!(live(&catalog, extent).await, bytes, "extent {extent}");
    }
    compaction_switches(&catalog).await;
    transitions_switch_and_record_the_policy(&catalog).await;
    writes_never_land_in_a_deleted_bucket(&catalog).await;
    versions_behave(&catalog).await;
}

/// A write that found its bucket, then lost it to a DeleteBucket (and perhaps to
/// another tenant making the name again), is refused and leaves no row; writes racing
/// a DeleteBucket either land before it (which then refuses: not empty) or are refused.
async fn writes_never_land_in_a_deleted_bucket(catalog: &Catalog) {
    let none = WriteCondition::default();
    catalog.create_bucket("t1", "gone", REPLICA3).await.unwrap();
    let found = catalog.owned_bucket("t1", "gone").await.unwrap();
    catalog.delete_bucket("t1", "gone").await.unwrap();
    let r = catalog.put_object_in(&found, &object("k", "e", vec![]), &none).await;
    assert!(matches!(r, Err(CatalogError::NoSuchBucket)), "{r:?}");
    let r = catalog.create_upload_in(&found, "k", &ObjectInfo::default()).await;
    assert!(matches!(r, Err(CatalogError::NoSuchBucket)), "{r:?}");
    // The name made again by another tenant: the old request's write must not land there.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await; // a later creation time
    catalog.create_bucket("t2", "gone", REPLICA3).await.unwrap();
    let r = catalog.put_object_in(&found, &object("k", "e", vec![]), &none).await;
    assert!(matches!(r, Err(CatalogError::NoSuchBucket)), "{r:?}");
    let r = catalog.create_upload_in(&found, "k", &ObjectInfo::default()).await;
    assert!(matches!(r, Err(CatalogError::NoSuchBucket)), "{r:?}");
    let listed = catalog.lister().await.unwrap().range("gone", b"", true, None, 10).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    catalog.delete_bucket("t2", "gone").await.unwrap();

    // Writers and a deleter at once: afterwards, either the bucket is there with every
    // acknowledged object, or it is gone and no row names it.
    for round in 0..5 {
        let name = format!("race{round}");
        catalog.create_bucket("t1", &name, REPLICA3).await.unwrap();
        let b = catalog.owned_bucket("t1", &name).await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let (c, b) = (catalog.clone(), b.clone());
                tokio::spawn(async move {
                    let o = object(&format!("k{i}"), "e", vec![]);
                    c.put_object_in(&b, &o, &WriteCondition::default()).await.is_ok()
                })
            })
            .collect();
        let deleted = catalog.delete_bucket("t1", &name).await.is_ok();
        let mut acked = 0;
        for w in writers {
            acked += w.await.unwrap() as usize;
        }
        let rows = catalog.lister().await.unwrap().range(&name, b"", true, None, 10).await.unwrap();
        if deleted {
            assert!(rows.is_empty(), "round {round}: the bucket was deleted but holds {rows:?}");
        } else {
            assert_eq!(rows.len(), acked, "round {round}");
            for r in rows {
                catalog.delete_object(&name, &r.key).await.unwrap();
            }
            catalog.delete_bucket("t1", &name).await.unwrap();
        }
    }
}

/// Transition rules: set on existing buckets only, listed, scanned in pages by key,
/// age and policy; a transit switches the row and records the new policy and class,
/// loses to an overwrite, and the rules go with their bucket.
async fn transitions_switch_and_record_the_policy(catalog: &Catalog) {
    use gc::Catalog as _;
    use std::time::Duration;
    let gcc = ogw::catalog::GcCatalog(catalog.clone());
    let ec = Policy::Ec { k: 2, m: 1 };
    let rule = gc::Transition {
        bucket: "tr".into(),
        prefix: "logs/".into(),
        after: Duration::from_secs(60),
        policy: ec,
        class: "STANDARD_IA".into(),
    };
    assert!(matches!(catalog.set_transition(&rule).await, Err(CatalogError::NoSuchBucket)));
    catalog.create_bucket("t1", "tr", REPLICA3).await.unwrap();
    let bad = gc::Transition { class: "GLACIER".into(), ..rule.clone() };
    assert!(matches!(catalog.set_transition(&bad).await, Err(CatalogError::Invalid(_))));
    catalog.set_transition(&rule).await.unwrap();
    // Set again: replaced, not doubled.
    catalog.set_transition(&rule).await.unwrap();
    assert_eq!(catalog.transitions(Some("tr")).await.unwrap(), vec![rule.clone()]);
    assert_eq!(gcc.transitions().await.unwrap(), vec![rule.clone()]);

    let none = WriteCondition::default();
    let put = |key: &str, extent: u64, modified_ms: i64, policy: Option<Policy>| {
        let mut o = object(key, "e", vec![slice(extent, 7)]);
        o.modified_ms = modified_ms;
        o.info.policy = policy;
        o
    };
    // Old enough: logs/a, logs/c, logs/d and logs/f (its bytes kept in its row: due with
    // no slices); logs/b is young, logs/e already coded, and "other" and "logt" are
    // outside the prefix.
    let mut kept = put("logs/f", 0, 1_000, Some(REPLICA3));
    (kept.layout, kept.size) = (Layout::Inline(bytes::Bytes::from_static(b"kept")), 4);
    for o in [
        kept,
        put("logs/a", 600, 1_000, Some(REPLICA3)),
        put("logs/b", 601, 90_000, Some(REPLICA3)),
        put("logs/c", 602, 1_000, None),
        put("logs/d", 603, 1_000, Some(REPLICA3)),
        put("logs/e", 604, 1_000, Some(ec)),
        put("logt", 605, 1_000, Some(REPLICA3)),
        put("other", 606, 1_000, Some(REPLICA3)),
    ] {
        catalog.put_object("tr", &o, &none).await.unwrap();
    }
    let keys = |d: &[gc::Due]| d.iter().map(|d| d.key.clone()).collect::<Vec<_>>();
    // Pages of two rows: the cursor carries the scan on; the end says None.
    let (d, next) = gcc.due(&rule, None, 50_000, 2).await.unwrap();
    assert_eq!((keys(&d), next.as_deref()), (vec!["logs/a".to_string()], Some("logs/b")));
    let (d, next) = gcc.due(&rule, next.as_deref(), 50_000, 2).await.unwrap();
    assert_eq!((keys(&d), next.as_deref()), (vec!["logs/c".to_string(), "logs/d".to_string()], Some("logs/d")));
    let (d, next) = gcc.due(&rule, next.as_deref(), 50_000, 2).await.unwrap();
    assert_eq!((keys(&d), next.as_deref()), (vec!["logs/f".to_string()], Some("logs/f")));
    let (d, next) = gcc.due(&rule, next.as_deref(), 50_000, 2).await.unwrap();
    assert_eq!((keys(&d), next), (vec![], None));
    let (all, _) = gcc.due(&rule, None, 50_000, 100).await.unwrap();
    assert_eq!(keys(&all), ["logs/a", "logs/c", "logs/d", "logs/f"]);
    assert_eq!(all[0].slices, vec![slice(600, 7)]);
    // Kept bytes: the transition labels the row and leaves them in it. A switch of
    // slices (compaction's) never matches such a row.
    assert!(all[3].slices.is_empty());
    assert!(!gcc.switch(&all[3].owner, &[], &[]).await.unwrap(), "a compaction switched kept bytes");
    assert!(gcc.transit(&all[3].owner, &[], &[], &rule).await.unwrap());
    let f = catalog.object("tr", "logs/f").await.unwrap().unwrap();
    assert_eq!(f.layout, Layout::Inline(bytes::Bytes::from_static(b"kept")), "the kept bytes moved");
    assert_eq!((f.info.policy, f.info.storage_class.map(|c| c.name())), (Some(ec), Some("STANDARD_IA")));

    let moved = |e: u64| vec![Slice { extent: ExtentId(e), offset: 0, len: 7, crc: 1 }];
    assert!(gcc.transit(&all[0].owner, &all[0].slices, &moved(700), &rule).await.unwrap());
    let a = catalog.object("tr", "logs/a").await.unwrap().unwrap();
    assert_eq!(a.layout, Layout::Slices(moved(700)));
    assert_eq!((a.info.policy, a.info.storage_class.map(|c| c.name())), (Some(ec), Some("STANDARD_IA")));
    assert_eq!(a.info.content_type.as_deref(), Some("text/plain"), "the rest of the info is kept");
    assert_eq!((live(catalog, 600).await, live(catalog, 700).await), (0, 7));
    // Moved: no longer due; the same switch again finds the row changed.
    assert!(!gcc.transit(&all[0].owner, &all[0].slices, &moved(700), &rule).await.unwrap());
    let (d, _) = gcc.due(&rule, None, 50_000, 100).await.unwrap();
    assert_eq!(keys(&d), ["logs/c", "logs/d"]);
    // An overwrite between the scan and the switch wins.
    catalog.put_object("tr", &put("logs/c", 607, 2_000, Some(REPLICA3)), &none).await.unwrap();
    assert!(!gcc.transit(&d[0].owner, &d[0].slices, &moved(701), &rule).await.unwrap());
    let c = catalog.object("tr", "logs/c").await.unwrap().unwrap();
    assert_eq!((c.layout, c.info.policy), (Layout::Slices(vec![slice(607, 7)]), Some(REPLICA3)));
    assert_eq!(live(catalog, 701).await, 0);
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);

    // Off, and gone with the bucket.
    assert!(catalog.remove_transition("tr", "logs/").await.unwrap());
    assert!(!catalog.remove_transition("tr", "logs/").await.unwrap());
    catalog.set_transition(&rule).await.unwrap();
    for k in ["logs/a", "logs/b", "logs/c", "logs/d", "logs/e", "logs/f", "logt", "other"] {
        catalog.delete_object("tr", k).await.unwrap();
    }
    catalog.delete_bucket("t1", "tr").await.unwrap();
    catalog.create_bucket("t2", "tr", REPLICA3).await.unwrap();
    assert_eq!(catalog.transitions(Some("tr")).await.unwrap(), vec![]);
}

/// GC's compaction: every row naming an extent is found, and switched to new slices
/// only if it still names the old ones.
async fn compaction_switches(catalog: &Catalog) {
    use gc::Catalog as _;
    let gcc = ogw::catalog::GcCatalog(catalog.clone());
    let none = WriteCondition::default();
    let (a, b) = (slice(400, 10), slice(401, 5));
    catalog.put_object("b1", &object("cmp", "c", vec![a, b]), &none).await.unwrap();
    let up = catalog.create_upload("b1", "cmp-mp", &ObjectInfo::default()).await.unwrap();
    let p = Part { num: 2, size: 10, etag: "p".into(), modified_ms: 1, info: ObjectInfo::default(), slices: vec![a] };
    catalog.put_part(&up, &p).await.unwrap();
    let rows = gcc.naming(ExtentId(400)).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let moved = Slice { extent: ExtentId(500), offset: 0, len: 10, crc: a.crc };
    for r in &rows {
        let new: Vec<Slice> = r.slices.iter().map(|s| if *s == a { moved } else { *s }).collect();
        assert!(gcc.switch(&r.owner, &r.slices, &new).await.unwrap(), "{}", r.owner);
        // A second switch from the old slices finds them changed.
        assert!(!gcc.switch(&r.owner, &r.slices, &new).await.unwrap(), "{}", r.owner);
    }
    assert_eq!(catalog.object("b1", "cmp").await.unwrap().unwrap().layout.named(), [moved, b]);
    assert_eq!(catalog.parts(&up, 0, 10).await.unwrap()[0].slices, vec![moved]);
    assert_eq!((live(catalog, 400).await, live(catalog, 500).await), (0, 20));
    assert!(gcc.naming(ExtentId(400)).await.unwrap().is_empty());
    // An overwrite between the read and the switch wins.
    let rows = gcc.naming(ExtentId(401)).await.unwrap();
    catalog.put_object("b1", &object("cmp", "d", vec![slice(402, 3)]), &none).await.unwrap();
    let stale = gcc.switch(&rows[0].owner, &rows[0].slices, &[moved, slice(501, 5)]).await.unwrap();
    assert!(!stale, "a switch over an overwritten row");
    assert_eq!(catalog.object("b1", "cmp").await.unwrap().unwrap().layout.named(), [slice(402, 3)]);
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);
}

/// The bytes rows name in `extent`, as recorded.
async fn live(catalog: &Catalog, extent: u64) -> i64 {
    let sql = "SELECT live FROM extents WHERE id = ";
    let v: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{sql}{extent}")))
        .fetch_optional(&catalog.db.pool)
        .await
        .unwrap();
    v.unwrap_or(0)
}

/// Writers naming extents race GC dooming them, on seeded random schedules: a write
/// either commits (and its extent is not doomed) or is refused with `Doomed`; a doomed
/// extent is never named by any row; the references always match the rows.
async fn doom_races(url: &str, seed: u64) {
    use gc::Catalog as _;
    use rand::{Rng, SeedableRng};

    let catalog = Catalog::new(Db::connect(url).await.unwrap(), MasterKey::ephemeral());
    catalog.create_tenant("racer").await.unwrap();
    catalog.create_bucket("racer", "races", REPLICA3).await.unwrap();
    let catalog = Arc::new(catalog);
    let gcc = ogw::catalog::GcCatalog((*catalog).clone());
    let none = WriteCondition::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let refused = Arc::new(AtomicUsize::new(0));
    let mut dooms = 0;
    for round in 0..6u64 {
        let extents: Vec<u64> = (0..4).map(|i| 10_000 + round * 10 + i).collect();
        // One extent starts named, so that a doom of it must wait for its deletes.
        catalog.put_object("races", &object("base", "b", vec![slice(extents[0], 5)]), &none).await.unwrap();
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (catalog, none, refused) = (catalog.clone(), none.clone(), refused.clone());
                let plan: Vec<(u64, u32, bool)> =
                    (0..5).map(|_| (extents[rng.gen_range(0..4)], rng.gen_range(0..4), rng.gen_bool(0.5))).collect();
                tokio::spawn(async move {
                    let mut kept = Vec::new();
                    for (i, (extent, yields, delete)) in plan.into_iter().enumerate() {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        let key = format!("r{round}/w{w}/{i}");
                        match catalog.put_object("races", &object(&key, "e", vec![slice(extent, 3)]), &none).await {
                            Ok(_) if delete => assert!(catalog.delete_object("races", &key).await.unwrap().found),
                            Ok(_) => kept.push((key, extent)),
                            Err(CatalogError::Doomed(e)) => {
                                assert_eq!(e, ExtentId(extent));
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("write of {key}: {e}"),
                        }
                    }
                    kept
                })
            })
            .collect();
        let doomer = {
            let (gcc, catalog) = (gcc.clone(), catalog.clone());
            let order: Vec<(u64, u32)> = (0..12).map(|_| (extents[rng.gen_range(0..4)], rng.gen_range(0..4))).collect();
            tokio::spawn(async move {
                let mut doomed = Vec::new();
                for (i, (extent, yields)) in order.into_iter().enumerate() {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    if i == 6 {
                        catalog.delete_object("races", "base").await.unwrap();
                    }
                    if gcc.doom(ExtentId(extent), 1).await.unwrap() {
                        doomed.push(ExtentId(extent));
                    }
                }
                doomed
            })
        };
        let mut kept = Vec::new();
        for w in writers {
            kept.extend(w.await.unwrap());
        }
        let doomed = doomer.await.unwrap();
        dooms += doomed.len();
        for (key, extent) in kept {
            assert!(
                catalog.object("races", &key).await.unwrap().is_some(),
                "seed {seed}: {key} acknowledged, then lost"
            );
            assert!(!doomed.contains(&ExtentId(extent)), "seed {seed}: {key} names doomed extent {extent}");
        }
        let all: std::collections::HashSet<ExtentId> = gcc.doomed().await.unwrap().into_iter().map(|d| d.0).collect();
        let listed = catalog.lister().await.unwrap().range("races", b"", true, None, 10_000).await.unwrap();
        for o in listed {
            let o = catalog.object("races", &o.key).await.unwrap().expect("a listed key");
            for s in o.layout.named() {
                assert!(!all.contains(&s.extent), "seed {seed}: {} names doomed extent {}", o.key, s.extent);
            }
        }
        assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![], "seed {seed}");
    }
    part_races(&catalog, &mut rng).await;
    eprintln!("{dooms} extents doomed, {} writes refused", refused.load(Ordering::Relaxed));
    assert!(dooms > 0, "seed {seed}: the races doomed nothing");
    // The lease: one holder at a time, another once it runs out.
    let long = std::time::Duration::from_secs(60);
    assert!(gcc.try_lease("a", long).await.unwrap());
    assert!(gcc.try_lease("a", long).await.unwrap(), "the holder renews");
    assert!(!gcc.try_lease("b", long).await.unwrap(), "a second holder while the first's lease runs");
    assert!(gcc.try_lease("a", std::time::Duration::ZERO).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(gcc.try_lease("b", long).await.unwrap(), "the lease ran out");
}

/// The same part uploaded many times at once (an SDK's retries), racing an abort: the
/// references stay exactly what the rows name, and an aborted upload keeps no part.
async fn part_races(catalog: &Arc<Catalog>, rng: &mut rand::rngs::StdRng) {
    use rand::Rng;
    for round in 0..4u64 {
        let up = catalog.create_upload("races", &format!("mp{round}"), &ObjectInfo::default()).await.unwrap();
        let abort_after = rng.gen_range(0..20u32);
        let tasks: Vec<_> = (0..6u64)
            .map(|t| {
                let (catalog, up) = (catalog.clone(), up.clone());
                let plan: Vec<(u64, u32)> = (0..4).map(|_| (rng.gen_range(0..3), rng.gen_range(0..3))).collect();
                tokio::spawn(async move {
                    for (i, (extent, yields)) in plan.into_iter().enumerate() {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        let s = vec![slice(20_000 + round * 10 + extent, 4 + t as u32 + i as u32)];
                        let p = Part {
                            num: 1 + (t % 2) as u32,
                            size: 4,
                            etag: "e".into(),
                            modified_ms: 1,
                            info: ObjectInfo::default(),
                            slices: s,
                        };
                        match catalog.put_part(&up, &p).await {
                            Ok(()) | Err(CatalogError::NoSuchUpload) => {}
                            // Lost every retry to the other uploads of that part: not
                            // written, as a client's retry would find.
                            Err(CatalogError::Db(e)) if ogw::db::retryable(&e) => {}
                            Err(e) => panic!("part: {e}"),
                        }
                    }
                })
            })
            .collect();
        for _ in 0..abort_after {
            tokio::task::yield_now().await;
        }
        catalog.abort_upload(&up).await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(catalog.parts(&up, 0, 100).await.unwrap().len(), 0, "parts left in an aborted upload");
        assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![], "round {round}");
    }
}

/// Every version of `bucket` as listed in pages of `max` (with `delimiter`), as
/// (key, version, is a marker, latest, etag), and the common prefixes.
async fn all_versions(
    catalog: &Catalog,
    bucket: &str,
    delimiter: Option<&str>,
    max: usize,
) -> (Vec<(String, String, bool, bool, String)>, Vec<String>) {
    let (mut out, mut prefixes) = (Vec::new(), Vec::new());
    let mut cursor = catalog.version_cursor(bucket, "", None).await.unwrap();
    loop {
        let page = catalog.version_page(bucket, "", delimiter, cursor, max, 2).await.unwrap();
        assert!(page.entries.len() + page.prefixes.len() <= max);
        for (e, latest) in page.entries {
            out.push(match e {
                Entry::Object(o) => (o.key, o.version.unwrap_or_else(|| "null".into()), false, latest, o.etag),
                Entry::Marker(m) => (m.key, m.version.unwrap_or_else(|| "null".into()), true, latest, String::new()),
            });
        }
        prefixes.extend(page.prefixes);
        let Some((k, v)) = page.next else { return (out, prefixes) };
        cursor = catalog.version_cursor(bucket, &k, v.as_deref()).await.unwrap();
    }
}

/// Versioning semantics in one sequence: the null version of an object written before
/// versioning, new versions, delete markers, deleting versions for good (the newest left
/// becomes current again), suspended writes replacing the null version only, and
/// noncurrent versions keeping their bytes live until deleted.
async fn versions_behave(catalog: &Catalog) {
    let none = WriteCondition::default();
    catalog.create_bucket("t1", "vb", REPLICA3).await.unwrap();
    let b = || async { catalog.bucket("vb").await.unwrap().unwrap() };
    assert_eq!(catalog.put_object("vb", &object("k", "n0", vec![slice(600, 4)]), &none).await.unwrap(), None);
    catalog.set_versioning(&b().await, Versioning::Enabled).await.unwrap();
    assert!(catalog.set_versioning(&b().await, Versioning::Off).await.is_err());
    let v1 = catalog.put_object("vb", &object("k", "e1", vec![slice(601, 4)]), &none).await.unwrap().unwrap();
    let v2 = catalog.put_object("vb", &object("k", "e2", vec![slice(602, 4)]), &none).await.unwrap().unwrap();
    assert!(valid_version_id(&v1) && v1 != v2);
    // Every version's bytes stay named.
    for e in [600, 601, 602] {
        assert_eq!(live(catalog, e).await, 4, "extent {e}");
    }
    let d = catalog.delete_object("vb", "k").await.unwrap();
    assert!(d.marker && d.version.is_some());
    assert!(catalog.object("vb", "k").await.unwrap().is_none());
    assert!(catalog.latest_marker("vb", "k").await.unwrap().is_some());
    let (list, _) = all_versions(catalog, "vb", None, 1000).await;
    let got: Vec<(&str, bool, bool)> = list.iter().map(|(_, v, m, l, _)| (v.as_str(), *m, *l)).collect();
    let marker = d.version.clone().unwrap();
    assert_eq!(
        got,
        vec![
            (marker.as_str(), true, true),
            (v2.as_str(), false, false),
            (v1.as_str(), false, false),
            ("null", false, false)
        ]
    );
    // Deleting the marker brings v2 back as the current object.
    let allow = |_: &ObjectInfo| Ok(());
    let d = catalog.delete_version(&b().await, "k", &marker, &allow).await.unwrap();
    assert!(d.found && d.marker);
    assert_eq!(catalog.object("vb", "k").await.unwrap().unwrap().etag, "e2");
    // Deleting the current version for good: v1 is current, v2's bytes are free.
    catalog.delete_version(&b().await, "k", &v2, &allow).await.unwrap();
    assert_eq!(catalog.object("vb", "k").await.unwrap().unwrap().version.as_deref(), Some(v1.as_str()));
    assert_eq!(live(catalog, 602).await, 0);
    // A refusing check keeps the version.
    let refuse = |_: &ObjectInfo| Err(CatalogError::Locked("held".into()));
    assert!(matches!(catalog.delete_version(&b().await, "k", "null", &refuse).await, Err(CatalogError::Locked(_))));
    assert_eq!(live(catalog, 600).await, 4);
    // A version that is not there: nothing happens.
    assert!(!catalog.delete_version(&b().await, "k", &v2, &allow).await.unwrap().found);
    // Suspended: writes make the null version, replacing the old null one (its bytes go)
    // and keeping v1.
    catalog.set_versioning(&b().await, Versioning::Suspended).await.unwrap();
    assert_eq!(catalog.put_object("vb", &object("k", "s1", vec![slice(603, 4)]), &none).await.unwrap(), None);
    assert_eq!(live(catalog, 600).await, 0, "the old null version is replaced");
    assert_eq!(catalog.put_object("vb", &object("k", "s2", vec![slice(604, 4)]), &none).await.unwrap(), None);
    assert_eq!(live(catalog, 603).await, 0);
    let (list, _) = all_versions(catalog, "vb", None, 1000).await;
    assert_eq!(
        list.iter().map(|x| (x.1.as_str(), x.4.as_str())).collect::<Vec<_>>(),
        vec![("null", "s2"), (v1.as_str(), "e1")]
    );
    // A suspended delete replaces the null version with a null marker.
    let d = catalog.delete_object("vb", "k").await.unwrap();
    assert!(d.marker && d.version.is_none());
    assert_eq!(live(catalog, 604).await, 0);
    assert_eq!(catalog.version("vb", "k", &v1).await.unwrap().map(|e| matches!(e, Entry::Object(_))), Some(true));
    // The bucket is not empty while versions remain.
    assert!(matches!(catalog.delete_bucket("t1", "vb").await, Err(CatalogError::BucketNotEmpty)));
    for v in ["null", v1.as_str()] {
        assert!(catalog.delete_version(&b().await, "k", v, &allow).await.unwrap().found);
    }
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);
    catalog.delete_bucket("t1", "vb").await.unwrap();
}

/// Writers, deleters and GC's compaction race on a few keys of a versioned bucket, on
/// seeded random schedules: every acknowledged version not deleted for good is listed
/// with its bytes (as written, or as compaction moved them); each key has one latest
/// version, an object row exactly when that version is an object; the listing reads
/// the same in pages of any size; the references match the rows.
async fn version_races(url: &str, seed: u64) {
    use gc::Catalog as _;
    use rand::{Rng, SeedableRng};
    let catalog = Arc::new(Catalog::new(Db::connect(url).await.unwrap(), MasterKey::ephemeral()));
    catalog.create_tenant("vracer").await.unwrap();
    catalog.create_bucket("vracer", "vraces", REPLICA3).await.unwrap();
    let b = catalog.bucket("vraces").await.unwrap().unwrap();
    catalog.set_versioning(&b, Versioning::Enabled).await.unwrap();
    let b = catalog.bucket("vraces").await.unwrap().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let keys = ["a", "a/b", "a/c", "b"];
    let next_extent = Arc::new(AtomicUsize::new(30_000));
    let tasks: Vec<_> = (0..5)
        .map(|w| {
            let (catalog, b, next_extent) = (catalog.clone(), b.clone(), next_extent.clone());
            let plan: Vec<(usize, u32, u32)> =
                (0..12).map(|_| (rng.gen_range(0..keys.len()), rng.gen_range(0..10), rng.gen_range(0..3))).collect();
            tokio::spawn(async move {
                let gcc = ogw::catalog::GcCatalog((*catalog).clone());
                let none = WriteCondition::default();
                // Versions this task wrote and not deleted: (key, version, etag).
                let mut mine: Vec<(String, String, String)> = Vec::new();
                let mut gone = Vec::new();
                for (i, (k, op, yields)) in plan.into_iter().enumerate() {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    let key = keys[k];
                    match op {
                        0..=4 => {
                            let extent = next_extent.fetch_add(1, Ordering::Relaxed) as u64;
                            let etag = format!("w{w}i{i}");
                            let o = object(key, &etag, vec![slice(extent, 4)]);
                            let v = catalog.put_object("vraces", &o, &none).await.unwrap().unwrap();
                            mine.push((key.into(), v, etag));
                        }
                        5 | 6 => {
                            catalog.delete_object("vraces", key).await.unwrap();
                        }
                        7 | 8 if !mine.is_empty() => {
                            let (key, v, _) = mine.swap_remove(i % mine.len());
                            let d = catalog.delete_version(&b, &key, &v, &|_| Ok(())).await.unwrap();
                            assert!(d.found, "{key} {v}");
                            gone.push(v);
                        }
                        _ if !mine.is_empty() => {
                            // Compaction moves one of this task's versions' bytes.
                            let (key, v, _) = &mine[i % mine.len()];
                            let o = catalog.version("vraces", key, v).await.unwrap();
                            let Some(Entry::Object(o)) = o else { panic!("{key} {v} lost") };
                            let to = next_extent.fetch_add(1, Ordering::Relaxed) as u64;
                            for r in gcc.naming(o.layout.named()[0].extent).await.unwrap() {
                                let moved = vec![Slice { extent: ExtentId(to), ..r.slices[0] }];
                                // A switch that loses every retry to writers is left to
                                // GC's next pass: the row keeps its slices.
                                if let Err(e) = gcc.switch(&r.owner, &r.slices, &moved).await {
                                    assert!(e.to_string().contains("eadlock"), "{e}");
                                }
                            }
                        }
                        _ => {}
                    }
                }
                (mine, gone)
            })
        })
        .collect();
    let (mut kept, mut gone) = (Vec::new(), Vec::new());
    for t in tasks {
        let (m, g) = t.await.unwrap();
        kept.extend(m);
        gone.extend(g);
    }
    let (all, _) = all_versions(&catalog, "vraces", None, 1000).await;
    for (key, v, etag) in &kept {
        assert!(
            all.iter().any(|x| &x.0 == key && &x.1 == v && &x.4 == etag),
            "seed {seed}: {key} version {v} acknowledged, then lost"
        );
    }
    for v in &gone {
        assert!(!all.iter().any(|x| &x.1 == v), "seed {seed}: version {v} deleted, yet listed");
    }
    for key in keys {
        let of_key: Vec<_> = all.iter().filter(|x| x.0 == key).collect();
        if of_key.is_empty() {
            continue;
        }
        assert!(
            of_key[0].3 && of_key.iter().skip(1).all(|x| !x.3),
            "seed {seed}: {key}: latest is not first: {of_key:?}"
        );
        let current = catalog.object("vraces", key).await.unwrap();
        assert_eq!(current.map(|o| o.etag), (!of_key[0].2).then(|| of_key[0].4.clone()), "seed {seed}: {key}");
    }
    // Pages of any size, with and without a delimiter, list the same.
    for max in [1, 2, 3, 7] {
        assert_eq!(all_versions(&catalog, "vraces", None, max).await.0, all, "seed {seed}: pages of {max}");
    }
    let (flat, prefixes) = all_versions(&catalog, "vraces", Some("/"), 1000).await;
    for max in [1, 2, 5] {
        assert_eq!(all_versions(&catalog, "vraces", Some("/"), max).await, (flat.clone(), prefixes.clone()));
    }
    assert!(flat.iter().all(|x| !x.0.contains('/')));
    if all.iter().any(|x| x.0.starts_with("a/")) {
        assert_eq!(prefixes, vec!["a/".to_string()]);
    }
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![], "seed {seed}");
    eprintln!("{} versions listed, {} kept, {} deleted for good", all.len(), kept.len(), gone.len());
}

/// Lifecycle passes race clients on seeded random schedules, in an unversioned and a
/// versioned bucket, with a rule expiring objects (and noncurrent versions) a day old,
/// a day lasting 1 s: keys start with old objects; clients overwrite them with fresh
/// ones (never due) or delete them. Every fresh write a client made last to its key is
/// the key's current object at the end, a key a client deleted last has none, and
/// every old object nobody touched is expired; a held version is kept; the references
/// match the rows.
async fn lifecycle_races(url: &str, seed: u64) {
    use rand::{Rng, SeedableRng};
    let catalog = Arc::new(Catalog::new(Db::connect(url).await.unwrap(), MasterKey::ephemeral()));
    catalog.create_tenant("lcracer").await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let now = ogw::db::now_ms();
    let (old, fresh) = (now - 10_000, now + 600_000);
    let rules = ogw::lifecycle::Lifecycle {
        rules: vec![ogw::lifecycle::Rule {
            id: "r".into(),
            enabled: true,
            prefix: Some(String::new()),
            expiration: Some(ogw::lifecycle::Expiration { days: Some(1), ..Default::default() }),
            noncurrent: Some(ogw::lifecycle::NoncurrentExpiration { days: Some(1), newer_versions: None }),
            ..Default::default()
        }],
    };
    for (bucket, versioned) in [("lcplain", false), ("lcvers", true)] {
        catalog.create_bucket("lcracer", bucket, REPLICA3).await.unwrap();
        let b = catalog.bucket(bucket).await.unwrap().unwrap();
        if versioned {
            catalog.set_versioning(&b, Versioning::Enabled).await.unwrap();
        }
        let b = catalog.bucket(bucket).await.unwrap().unwrap();
        let doc = serde_json::to_string(&rules).unwrap();
        catalog.set_bucket_config(&b, ogw::catalog::ConfigKind::Lifecycle, Some(&doc)).await.unwrap();
        let none = WriteCondition::default();
        let mut extent = 40_000 + if versioned { 5_000 } else { 0 };
        let old_object = |key: &str, extent: u64| {
            let mut o = object(key, "old", vec![slice(extent, 2)]);
            o.modified_ms = old;
            o
        };
        for k in 0..12 {
            for _ in 0..if versioned { 2 } else { 1 } {
                extent += 1;
                catalog.put_object(bucket, &old_object(&format!("k{k}"), extent), &none).await.unwrap();
            }
        }
        // A held old version (Object Lock needs versioning): a rule never deletes it.
        if versioned {
            let mut held = old_object("held", 49_999);
            held.info.legal_hold = true;
            catalog.put_object(bucket, &held, &none).await.unwrap();
            catalog.put_object(bucket, &object("held", "fresh", vec![slice(49_900, 2)]), &none).await.unwrap();
        }
        // Three clients, each with its own keys k0..k11 (k % 3), and the worker.
        let clients: Vec<_> = (0..3u64)
            .map(|c| {
                let catalog = catalog.clone();
                let plan: Vec<(u64, bool, u32)> =
                    (0..10).map(|_| (c + 3 * rng.gen_range(0..3u64), rng.gen_bool(0.7), rng.gen_range(0..6))).collect();
                tokio::spawn(async move {
                    let none = WriteCondition::default();
                    let mut last: std::collections::HashMap<String, Option<String>> = Default::default();
                    for (i, (k, put, yields)) in plan.into_iter().enumerate() {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        let key = format!("k{k}");
                        if put {
                            let etag = format!("c{c}-{i}");
                            let mut o = object(
                                &key,
                                &etag,
                                vec![slice(46_000 + versioned as u64 * 1000 + c * 100 + i as u64, 2)],
                            );
                            o.modified_ms = fresh;
                            catalog.put_object(bucket, &o, &none).await.unwrap();
                            last.insert(key, Some(etag));
                        } else {
                            catalog.delete_object(bucket, &key).await.unwrap();
                            last.insert(key, None);
                        }
                    }
                    last
                })
            })
            .collect();
        let worker = {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                let mut done = ogw::catalog::LifecycleReport::default();
                for _ in 0..4 {
                    let r = catalog.lifecycle_pass(ogw::db::now_ms(), 1000).await.unwrap();
                    done.expired += r.expired;
                    done.noncurrent_deleted += r.noncurrent_deleted;
                    done.locked += r.locked;
                    tokio::task::yield_now().await;
                }
                done
            })
        };
        let mut last = std::collections::HashMap::new();
        for c in clients {
            last.extend(c.await.unwrap());
        }
        let done = worker.await.unwrap();
        let end = catalog.lifecycle_pass(ogw::db::now_ms(), 1000).await.unwrap();
        for k in 0..12 {
            let key = format!("k{k}");
            let current = catalog.object(bucket, &key).await.unwrap().map(|o| o.etag);
            match last.get(&key) {
                Some(Some(etag)) => assert_eq!(current.as_deref(), Some(etag.as_str()), "seed {seed}: {bucket}/{key}"),
                Some(None) => assert_eq!(current, None, "seed {seed}: {bucket}/{key} deleted last"),
                None => assert_eq!(current, None, "seed {seed}: {bucket}/{key}: old, untouched, not expired"),
            }
            if versioned {
                // An old version an old one replaced was noncurrent for over a day: gone.
                // (One a fresh write or a new marker replaced became noncurrent just now.)
                let (all, _) = all_versions(&catalog, bucket, None, 1000).await;
                let of_key: Vec<_> = all.iter().filter(|x| x.0 == key).collect();
                assert!(
                    !of_key.windows(2).any(|w| w[0].4 == "old" && w[1].4 == "old"),
                    "seed {seed}: {key}: {of_key:?}"
                );
            }
        }
        if versioned {
            let (all, _) = all_versions(&catalog, bucket, None, 1000).await;
            assert!(all.iter().any(|x| x.0 == "held" && x.4 == "old"), "seed {seed}: the held version: {all:?}");
            assert!(done.locked + end.locked > 0, "seed {seed}: nothing was kept by a hold");
        }
        assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![], "seed {seed}");
        eprintln!("{bucket}: {} expired, {} noncurrent deleted while racing", done.expired, done.noncurrent_deleted);
    }
}

/// The seed of a race test: `STRATA_SEED` to replay one, else a new one (printed).
fn seed() -> u64 {
    let s = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {s} (replay with STRATA_SEED={s})");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&format!("sqlite://{}", dir.path().join("m.db").display())).await;
    doom_races(&format!("sqlite://{}", dir.path().join("races.db").display()), seed()).await;
    version_races(&format!("sqlite://{}", dir.path().join("races.db").display()), seed()).await;
    lifecycle_races(&format!("sqlite://{}", dir.path().join("races.db").display()), seed()).await;
}

/// SQLite group commit (`ogw::db::Group`): concurrent object writes share COMMITs, a
/// write that fails its condition inside a group leaves the others' rows, and a write
/// abandoned holding the turn (its caller cancelled) leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_object_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let key = MasterKey::load_or_create(&dir.path().join("k")).unwrap();
    let catalog = Arc::new(Catalog::new(Db::connect(&url).await.unwrap(), key));
    catalog.create_tenant("t1").await.unwrap();
    catalog.create_bucket("t1", "b1", REPLICA3).await.unwrap();
    let before = catalog.db.group_commits();
    // Another pool on the same file sees only what was committed.
    let fresh = Arc::new(Catalog::new(Db::connect(&url).await.unwrap(), catalog.key.clone()));

    // 32 writers of 16 keys each, and 8 more racing to create one key. Each write is
    // committed by the time it returns: another connection reads it at once.
    let won = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (catalog, fresh) = (catalog.clone(), fresh.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..16u64 {
                let key = format!("k/{w:02}/{i:02}");
                let o = object(&key, &format!("e{w}-{i}"), vec![slice(w * 100 + i + 1, 10)]);
                catalog.put_object("b1", &o, &WriteCondition::default()).await.unwrap();
                let seen = fresh.object("b1", &key).await.unwrap();
                assert!(seen.is_some(), "{key} was acknowledged before its COMMIT");
            }
        }));
    }
    for w in 0..8u64 {
        let (catalog, won) = (catalog.clone(), won.clone());
        tasks.push(tokio::spawn(async move {
            let o = object("race", &format!("r{w}"), vec![slice(10_000 + w, 10)]);
            let cond = WriteCondition { if_none_match_any: true, ..Default::default() };
            match catalog.put_object("b1", &o, &cond).await {
                Ok(_) => {
                    won.fetch_add(1, Ordering::SeqCst);
                }
                Err(CatalogError::PreconditionFailed) => {}
                Err(e) => panic!("race {w}: {e}"),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(won.load(Ordering::SeqCst), 1, "one If-None-Match winner");
    // Every acknowledged write is there.
    for w in 0..32u64 {
        for i in 0..16u64 {
            let o = fresh.object("b1", &format!("k/{w:02}/{i:02}")).await.unwrap().expect("an acknowledged write");
            assert_eq!(o.etag, format!("e{w}-{i}"));
        }
    }
    let after = catalog.db.group_commits();
    let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
    eprintln!("{writes} object writes in {commits} commits");
    assert_eq!(writes, 32 * 16 + 1, "every successful write was in a group");
    assert!(commits < writes / 2, "{writes} writes took {commits} commits: they did not share");

    // A write abandoned after its statements, holding the turn: rolled back.
    let mut m = catalog.db.join().await.unwrap();
    sqlx::query("INSERT INTO tenants (name, created) VALUES ('ghost', 1)").execute(&mut **m.tx()).await.unwrap();
    drop(m);
    catalog.put_object("b1", &object("after", "a", vec![slice(20_000, 10)]), &WriteCondition::default()).await.unwrap();
    let ghosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE name = 'ghost'")
        .fetch_one(&fresh.db.pool)
        .await
        .unwrap();
    assert_eq!(ghosts, 0, "the abandoned write's row was committed");
    assert!(fresh.object("b1", "after").await.unwrap().is_some());

    // A member that is not its group's first, abandoned holding the turn: its savepoint
    // is rolled back, and the first member's write is committed.
    let mut first = catalog.db.join().await.unwrap();
    sqlx::query("INSERT INTO tenants (name, created) VALUES ('kept', 1)").execute(&mut **first.tx()).await.unwrap();
    let db = catalog.db.clone();
    let second = tokio::spawn(async move {
        let mut m = db.join().await.unwrap();
        sqlx::query("INSERT INTO tenants (name, created) VALUES ('ghost2', 1)").execute(&mut **m.tx()).await.unwrap();
        drop(m);
    });
    let t = std::time::Instant::now();
    while catalog.db.writers_waiting() == 0 {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the second writer never queued");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // The first passes the turn to the waiting second (which joins the same group and is
    // abandoned), then comes back to commit.
    first.finish(Ok::<(), sqlx::Error>(())).await.unwrap();
    second.await.unwrap();
    let count = |name: &'static str| {
        let pool = fresh.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM tenants WHERE name = ?")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("kept").await, 1, "the first member's write was lost");
    assert_eq!(count("ghost2").await, 0, "the abandoned second member's row was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_postgres() {
    let pg = sqlservers::postgres();
    exercise(&pg.url).await;
    // The same database: the races have their own tenant and bucket.
    doom_races(&pg.url, seed()).await;
    version_races(&pg.url, seed()).await;
    lifecycle_races(&pg.url, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_mariadb() {
    let db = sqlservers::mariadb();
    exercise(&db.url).await;
    doom_races(&db.url, seed()).await;
    version_races(&db.url, seed()).await;
    lifecycle_races(&db.url, seed()).await;

    // A catalog of schema version 5 whose text columns took the server's default
    // character set (latin1 here) holds any UTF-8 once upgraded.
    let d = Db::connect(&db.url).await.unwrap();
    sqlx::query("ALTER TABLE objects MODIFY info LONGTEXT CHARACTER SET latin1 NOT NULL")
        .execute(&d.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schema_version WHERE version = 6").execute(&d.pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::load_or_create(&dir.path().join("k")).unwrap();
    let catalog = Catalog::new(Db::connect(&db.url).await.unwrap(), key);
    let mut o = object("astral", "e", vec![]);
    o.info.user.insert("m".into(), "\u{10348}".into());
    catalog.put_object("b1", &o, &WriteCondition::default()).await.unwrap();
    assert_eq!(catalog.object("b1", "astral").await.unwrap().unwrap().info, o.info);
}

/// A catalog written by schema version 1 (no row ids, no references) is indexed when a
/// newer gateway opens it: every row gets an id, and the references match the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_catalog_gets_its_references_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("v1.db").display());
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let s = |a: u64, b: u32| ogw::catalog::encode_slices(&[slice(a, b)]);
        for q in [
            "CREATE TABLE schema_version (version BIGINT NOT NULL)",
            "INSERT INTO schema_version (version) VALUES (1)",
            "CREATE TABLE buckets (name TEXT PRIMARY KEY, tenant TEXT NOT NULL, created BIGINT NOT NULL, \
             policy TEXT NOT NULL)",
            "INSERT INTO buckets VALUES ('b', 't', 1, 'replica:3')",
            "CREATE TABLE objects (bucket TEXT NOT NULL, okey BLOB NOT NULL, size BIGINT NOT NULL, etag TEXT NOT NULL, \
             modified BIGINT NOT NULL, info TEXT NOT NULL, slices BLOB NOT NULL, PRIMARY KEY (bucket, okey))",
            "CREATE TABLE parts (upload TEXT NOT NULL, num BIGINT NOT NULL, size BIGINT NOT NULL, etag TEXT NOT NULL, \
             modified BIGINT NOT NULL, info TEXT NOT NULL, slices BLOB NOT NULL, PRIMARY KEY (upload, num))",
            "CREATE TABLE garbage (id INTEGER PRIMARY KEY AUTOINCREMENT, slices BLOB NOT NULL, reason TEXT NOT NULL, \
             created BIGINT NOT NULL)",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut c).await.unwrap();
        }
        for (key, slices) in [("a", s(7, 10)), ("b", s(7, 5)), ("c", s(8, 1))] {
            sqlx::query("INSERT INTO objects VALUES ('b', ?, 1, 'e', 1, '{}', ?)")
                .bind(key.as_bytes())
                .bind(slices)
                .execute(&mut c)
                .await
                .unwrap();
        }
        sqlx::query("INSERT INTO parts VALUES ('u', 1, 1, 'e', 1, '{}', ?)")
            .bind(s(9, 4))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let catalog = Catalog::new(Db::connect(&url).await.unwrap(), MasterKey::ephemeral());
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);
    for (extent, bytes) in [(7, 15), (8, 1), (9, 4)] {
        assert_eq!(live(&catalog, extent).await, bytes, "extent {extent}");
    }
    let no_id: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM objects WHERE rid IS NULL").fetch_one(&catalog.db.pool).await.unwrap();
    assert_eq!(no_id, 0);
    // Deleting an upgraded row drops what it named.
    assert!(catalog.delete_object("b", "a").await.unwrap().found);
    assert_eq!(live(&catalog, 7).await, 5);
    assert_eq!(audit_refs(&catalog.db).await.unwrap(), vec![]);
}
