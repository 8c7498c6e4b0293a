//! The gateway's SQL layer on all three backends: SQLite (embedded), and real
//! PostgreSQL and MariaDB servers started by the test. The same checks run on each:
//! tenants and sealed keys, bucket ownership, overwrite and delete recording garbage,
//! key order as S3 lists it (by UTF-8 bytes), conditional-write races with exactly one
//! winner, and multipart completion.

mod sqlservers;

use std::sync::Arc;

use client::Slice;
use ogw::catalog::{Catalog, CatalogError, Object, ObjectInfo, Part, WriteCondition};
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
        slices,
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
    let catalog = Catalog { db: Db::connect(url).await.unwrap(), key };
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

    // Overwrite and delete move the old slices to garbage.
    let none = WriteCondition::default();
    catalog.put_object("b1", &object("k", "e1", vec![slice(1, 10), slice(2, 20)]), &none).await.unwrap();
    catalog.put_object("b1", &object("k", "e2", vec![slice(3, 5)]), &none).await.unwrap();
    let o = catalog.object("b1", "k").await.unwrap().unwrap();
    assert_eq!((o.etag.as_str(), o.size, o.slices.clone()), ("e2", 5, vec![slice(3, 5)]));
    assert_eq!(o.info.content_type.as_deref(), Some("text/plain"));
    assert_eq!(catalog.garbage_slices().await.unwrap(), vec![slice(1, 10), slice(2, 20)]);
    assert!(catalog.delete_object("b1", "k").await.unwrap());
    assert!(!catalog.delete_object("b1", "k").await.unwrap());
    assert_eq!(catalog.garbage_slices().await.unwrap().len(), 3);

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
                    Ok(()) => won += 1,
                    Err(CatalogError::PreconditionFailed) => {}
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
            won
        }
    };
    assert_eq!(race(WriteCondition { if_none_match_any: true, if_match: None }, "a").await, 1);
    let cur = catalog.object("b1", "race").await.unwrap().unwrap().etag;
    assert_eq!(race(WriteCondition { if_none_match_any: false, if_match: Some(cur.clone()) }, "b").await, 1);
    assert_ne!(catalog.object("b1", "race").await.unwrap().unwrap().etag, cur);

    // Multipart: complete with parts 1 and 3; part 2 becomes garbage, the upload goes.
    let before = catalog.garbage_slices().await.unwrap().len();
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
    catalog.complete_upload("b1", &up, &o, &[1, 3], &none).await.unwrap();
    assert_eq!(catalog.object("b1", "mp").await.unwrap().unwrap().slices, o.slices);
    let g = catalog.garbage_slices().await.unwrap();
    assert_eq!(&g[before..], &[slice(202, 10)]);
    assert!(matches!(catalog.upload("b1", "mp", &up).await, Err(CatalogError::NoSuchUpload)));
    assert!(catalog.uploads("b1", "", ("", ""), 10).await.unwrap().is_empty());
    let up2 = catalog.create_upload("b1", "mp2", &ObjectInfo::default()).await.unwrap();
    catalog.abort_upload(&up2).await.unwrap();
    assert!(matches!(catalog.abort_upload(&up2).await, Err(CatalogError::NoSuchUpload)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&format!("sqlite://{}", dir.path().join("m.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_postgres() {
    let pg = sqlservers::postgres();
    exercise(&pg.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_on_mariadb() {
    let db = sqlservers::mariadb();
    exercise(&db.url).await;
}
