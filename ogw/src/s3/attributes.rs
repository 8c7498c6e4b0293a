//! GetObjectAttributes: the ETag, checksum, parts (paginated, with each part's checksum
//! when the object has one), storage class and size of an object, each only when
//! asked for. AWS answers the ETag unquoted here (s3s quotes it: `stamp::unquote_etag`
//! undoes that on the way out).

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::dto::{class_name, ts, Checksums};
use super::Gateway;
use crate::limits::PARTS_MAX;

pub(super) async fn get_object_attributes(
    gw: &Gateway,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let i = &req.input;
    let b = gw.owned(&req, &i.bucket).await?;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    // One header, `ETag,ObjectSize`, or the header repeated.
    let names: Vec<&str> = i
        .object_attributes
        .iter()
        .flat_map(|a| a.as_str().split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if names.is_empty() {
        return Err(s3_error!(InvalidArgument, "x-amz-object-attributes names no attribute"));
    }
    const KNOWN: [&str; 5] = [
        ObjectAttributes::CHECKSUM,
        ObjectAttributes::ETAG,
        ObjectAttributes::OBJECT_PARTS,
        ObjectAttributes::OBJECT_SIZE,
        ObjectAttributes::STORAGE_CLASS,
    ];
    if let Some(bad) = names.iter().find(|a| !KNOWN.contains(a)) {
        return Err(s3_error!(InvalidArgument, "unknown object attribute {bad:?}"));
    }
    let asked = |a: &str| names.contains(&a);
    let o = gw.lookup(&i.bucket, &i.key, version).await??;
    // An SSE-C object's attributes are for whoever has its key (as AWS).
    gw.data_key(&o.info, super::sse::KeyGiven::from(i).key()?.as_ref())?;
    let mut out = GetObjectAttributesOutput {
        last_modified: Some(ts(o.modified_ms)),
        version_id: super::versioning::version_header(&b, &o.version),
        ..Default::default()
    };
    if asked(ObjectAttributes::ETAG) {
        out.e_tag = Some(super::dto::etag(&o.etag));
    }
    if asked(ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(o.size as i64);
    }
    if asked(ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(StorageClass::from_static(class_name(o.info.storage_class)));
    }
    if asked(ObjectAttributes::CHECKSUM) {
        if let Some(c) = &o.info.checksum {
            let mut sum = Checksum::default();
            Checksums::from(&mut sum).set(c);
            sum.checksum_type = o.info.checksum_type.map(|k| ChecksumType::from_static(k.name()));
            out.checksum = Some(sum);
        }
    }
    if asked(ObjectAttributes::OBJECT_PARTS) && !o.info.parts.is_empty() {
        let max = match i.max_parts {
            None => PARTS_MAX,
            Some(n) if n >= 0 => n.min(PARTS_MAX),
            Some(_) => return Err(s3_error!(InvalidArgument, "max-parts must not be negative")),
        };
        let marker = match i.part_number_marker {
            None => 0,
            Some(m) if m >= 0 => m as usize,
            Some(_) => return Err(s3_error!(InvalidArgument, "part-number-marker must not be negative")),
        };
        let algo_sum = |n: usize| {
            let c = o.info.checksum.as_ref()?;
            let v = o.info.part_sums.get(n)?;
            Some(crate::checksum::Checksum { algo: c.algo, value: v.clone() })
        };
        let page: Vec<ObjectPart> = (marker..o.info.parts.len())
            .take(max as usize)
            .map(|n| {
                let mut p = ObjectPart {
                    part_number: Some(n as i32 + 1),
                    size: Some(o.info.parts[n] as i64),
                    ..Default::default()
                };
                if let Some(c) = algo_sum(n) {
                    Checksums::from(&mut p).set(&c);
                }
                p
            })
            .collect();
        let last = page.last().and_then(|p| p.part_number);
        let truncated = marker + page.len() < o.info.parts.len();
        out.object_parts = Some(GetObjectAttributesParts {
            total_parts_count: Some(o.info.parts.len() as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if truncated { last } else { None },
            max_parts: Some(max),
            is_truncated: Some(truncated),
            parts: Some(page),
        });
    }
    Ok(S3Response::new(out))
}
