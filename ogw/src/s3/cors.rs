//! Put, Get and DeleteBucketCors: the rules as a bucket's `cors` configuration document
//! (`crate::cors` answers preflights and decorates answers with them).

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::Gateway;
use crate::catalog::ConfigKind;
use crate::cors::{validate, Rule};

pub(super) async fn get_bucket_cors(
    gw: &Gateway,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let Some(doc) = gw.catalog.bucket_config(&b.name, ConfigKind::Cors).await? else {
        return Err(s3_error!(NoSuchCORSConfiguration));
    };
    let rules: Vec<Rule> = serde_json::from_str(&doc).map_err(super::errors::internal)?;
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let cors_rules = rules
        .into_iter()
        .map(|r| CORSRule {
            id: r.id.clone(),
            allowed_origins: r.origins.clone(),
            allowed_methods: r.methods.clone(),
            allowed_headers: some(&r.headers),
            expose_headers: some(&r.expose),
            max_age_seconds: r.max_age,
        })
        .collect();
    Ok(S3Response::new(GetBucketCorsOutput { cors_rules: Some(cors_rules) }))
}

pub(super) async fn put_bucket_cors(
    gw: &Gateway,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    let rules: Vec<Rule> = req
        .input
        .cors_configuration
        .cors_rules
        .into_iter()
        .map(|r| Rule {
            id: r.id,
            origins: r.allowed_origins,
            methods: r.allowed_methods,
            headers: r.allowed_headers.unwrap_or_default(),
            expose: r.expose_headers.unwrap_or_default(),
            max_age: r.max_age_seconds,
        })
        .collect();
    validate(&rules).map_err(|m| s3_error!(InvalidRequest, "{m}"))?;
    let doc = serde_json::to_string(&rules).expect("plain data");
    gw.catalog.set_bucket_config(&b, ConfigKind::Cors, Some(&doc)).await?;
    gw.cors.forget(&b.name);
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub(super) async fn delete_bucket_cors(
    gw: &Gateway,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    let b = gw.owned(&req, &req.input.bucket).await?;
    gw.catalog.set_bucket_config(&b, ConfigKind::Cors, None).await?;
    gw.cors.forget(&b.name);
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}
