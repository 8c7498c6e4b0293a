//! Who may do what (`crate::acl` holds the model): the bucket or object an operation
//! needs, if its owner asks or an ACL grants the permission; and the ACL operations
//! (Get/PutBucketAcl, Get/PutObjectAcl) with the canned and `x-amz-grant-*` headers
//! that CreateBucket, PutObject and CreateMultipartUpload also take.

use s3s::dto::{self, *};
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use super::dto::owner;
use super::Gateway;
use crate::acl::{
    group, parse_grant_header, Acl, Caller, Grant, Perm, Who, ALL_USERS, AUTHENTICATED_USERS, GRANTS_MAX,
};
use crate::catalog::{Bucket as BucketRec, ConfigKind, Object};

fn denied(caller: &Option<String>) -> S3Error {
    match caller {
        None => s3_error!(AccessDenied, "Access Denied"),
        Some(_) => s3_error!(AccessDenied, "the bucket belongs to another account"),
    }
}

fn as_caller(c: &Option<String>) -> Caller<'_> {
    match c {
        None => Caller::Anonymous,
        Some(t) => Caller::Tenant(t),
    }
}

/// `x-amz-expected-bucket-owner`: a request that names another owner than the bucket's
/// is refused (so that a client never writes into, or reads from, a bucket that changed
/// hands).
pub(super) fn expected_owner<T>(req: &S3Request<T>, b: &BucketRec) -> S3Result<()> {
    match req.headers.get("x-amz-expected-bucket-owner").map(|v| v.to_str().unwrap_or_default()) {
        Some(o) if o != b.tenant => Err(s3_error!(AccessDenied, "the bucket has another owner")),
        _ => Ok(()),
    }
}

impl Gateway {
    /// The caller's tenant, or `None` for a request without credentials.
    pub(super) async fn caller<T>(&self, req: &S3Request<T>) -> S3Result<Option<String>> {
        if req.credentials.is_none() {
            return Ok(None);
        }
        self.tenant(req).await.map(Some)
    }

    /// The ACL of a bucket (private when none is set).
    pub(super) async fn bucket_acl(&self, bucket: &str) -> S3Result<Acl> {
        match self.catalog.bucket_config(bucket, ConfigKind::Acl).await? {
            None => Ok(Acl::default()),
            Some(doc) => serde_json::from_str(&doc).map_err(super::errors::internal),
        }
    }

    /// The bucket, if the caller owns it or the bucket's ACL grants it `perm`.
    pub(super) async fn bucket_for<T>(&self, req: &S3Request<T>, bucket: &str, perm: Perm) -> S3Result<BucketRec> {
        let b = self.catalog.bucket(bucket).await?.ok_or_else(|| s3_error!(NoSuchBucket))?;
        self.granted(req, b, perm).await
    }

    /// As `bucket_for(.., Perm::Write)` from a bucket row up to 1 s old
    /// (`Catalog::bucket_cached`), for PutObject only: its transaction writes into the
    /// incarnation this row names or into nothing (`Catalog::put_object_in` checks it
    /// under the bucket's lock), and it answers the caller only after that. So a row
    /// gone stale (the bucket deleted, or made again by another tenant, through another
    /// gateway) refuses the write with `NoSuchBucket`. Reads must not use it: the
    /// owner it names decides what they return.
    pub(super) async fn bucket_to_put<T>(&self, req: &S3Request<T>, bucket: &str) -> S3Result<BucketRec> {
        let b = self.catalog.bucket_cached(bucket).await?.ok_or_else(|| s3_error!(NoSuchBucket))?;
        self.granted(req, b, Perm::Write).await
    }

    /// `b`, if the caller owns it or its ACL grants the caller `perm`.
    async fn granted<T>(&self, req: &S3Request<T>, b: BucketRec, perm: Perm) -> S3Result<BucketRec> {
        let caller = self.caller(req).await?;
        expected_owner(req, &b)?;
        if caller.as_deref() == Some(b.tenant.as_str())
            || req.extensions.get::<super::PolicyAllows>().is_some()
            || self.bucket_acl(&b.name).await?.allows(as_caller(&caller), perm)
        {
            return Ok(b);
        }
        Err(denied(&caller))
    }

    /// The object (the current one, or the version `version`), if the caller owns its
    /// bucket or the object's ACL grants it `perm`. A missing object is `NoSuchKey` (or
    /// what `lookup` says of it) to whoever may list the bucket, else `AccessDenied` (as
    /// S3: nothing says what exists to whoever may not list).
    pub(super) async fn object_for<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        perm: Perm,
    ) -> S3Result<(BucketRec, Object)> {
        let caller = self.caller(req).await?;
        let b = self.catalog.bucket(bucket).await?.ok_or_else(|| s3_error!(NoSuchBucket))?;
        expected_owner(req, &b)?;
        // A bucket policy that allowed this request counts as the owner's consent.
        let owner =
            caller.as_deref() == Some(b.tenant.as_str()) || req.extensions.get::<super::PolicyAllows>().is_some();
        match self.lookup(bucket, key, version).await? {
            Ok(o) if owner || o.info.acl.as_ref().is_some_and(|a| a.allows(as_caller(&caller), perm)) => Ok((b, o)),
            Ok(_) => Err(denied(&caller)),
            Err(e)
                if owner
                    || self.bucket_acl(&b.name).await?.allows(as_caller(&caller), Perm::Read)
                    || self.policy_lets_list(req, &b.name, key, &caller).await =>
            {
                Err(e)
            }
            Err(_) => Err(denied(&caller)),
        }
    }
}

impl Gateway {
    /// The source object of a copy, if `tenant` owns its bucket or the object's ACL
    /// lets it read it (a missing one: `NoSuchKey` to whoever may list the bucket). The
    /// destination's rights and the request's policy decision never count here.
    pub(super) async fn readable_source(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<(BucketRec, Object)> {
        let caller = Some(tenant.to_owned());
        let b = self.catalog.bucket(bucket).await?.ok_or_else(|| s3_error!(NoSuchBucket))?;
        let owner = b.tenant == tenant;
        match self.lookup(bucket, key, version).await? {
            Ok(o) if owner || o.info.acl.as_ref().is_some_and(|a| a.allows(Caller::Tenant(tenant), Perm::Read)) => {
                Ok((b, o))
            }
            Ok(_) => Err(denied(&caller)),
            Err(e) if owner || self.bucket_acl(&b.name).await?.allows(Caller::Tenant(tenant), Perm::Read) => Err(e),
            Err(_) => Err(denied(&caller)),
        }
    }

    /// Whether the bucket's policy lets the caller list the bucket at the prefix `key`
    /// (S3 answers a missing key with 404 to whoever may, 403 to others).
    async fn policy_lets_list<T>(&self, req: &S3Request<T>, bucket: &str, key: &str, caller: &Option<String>) -> bool {
        let Ok(Some(p)) = self.policies.get(&self.catalog, bucket).await else { return false };
        let peer = req.extensions.get::<crate::server::Peer>().copied();
        let mut values = super::policy::values(&req.uri, &req.headers, peer, caller.as_deref());
        values.insert("s3:prefix".into(), vec![key.to_owned()]);
        let r = crate::policy::Request {
            caller: as_caller(caller),
            action: "s3:ListBucket",
            resource: format!("arn:aws:s3:::{bucket}"),
            values,
        };
        p.decide(&r) == crate::policy::Decision::Allow
    }
}

/// What an ACL-setting request gives: a canned ACL, grant headers, or (Put*Acl) a body.
pub(super) struct AclRequest<'a> {
    pub canned: Option<&'a str>,
    pub full_control: &'a Option<String>,
    pub read: &'a Option<String>,
    pub read_acp: &'a Option<String>,
    pub write: &'a Option<String>,
    pub write_acp: &'a Option<String>,
    pub policy: Option<&'a AccessControlPolicy>,
}

view! {
    /// The `x-amz-grant-*` headers of a request that sets an ACL.
    pub(super) struct GrantHeaders {
        grant_full_control: Option<GrantFullControl>,
        grant_read: Option<GrantRead>,
        grant_read_acp: Option<GrantReadACP>,
        grant_write: Option<GrantWrite>,
        grant_write_acp: Option<GrantWriteACP>,
    } for PutBucketAclInput, PutObjectAclInput, CreateBucketInput
}

impl<'a> AclRequest<'a> {
    pub(super) fn of(canned: Option<&'a str>, g: GrantHeaders<'a>, policy: Option<&'a AccessControlPolicy>) -> Self {
        AclRequest {
            canned,
            full_control: g.grant_full_control,
            read: g.grant_read,
            read_acp: g.grant_read_acp,
            write: g.grant_write,
            write_acp: g.grant_write_acp,
            policy,
        }
    }
}

impl AclRequest<'_> {
    /// The ACL asked for (`None`: the request sets none), with every tenant it names
    /// checked to exist.
    pub(super) async fn acl(&self, gw: &Gateway) -> S3Result<Option<Acl>> {
        let headers = [
            (self.full_control, Perm::FullControl),
            (self.read, Perm::Read),
            (self.read_acp, Perm::ReadAcp),
            (self.write, Perm::Write),
            (self.write_acp, Perm::WriteAcp),
        ];
        let given = headers.iter().filter(|(h, _)| h.is_some()).count();
        let kinds = [self.canned.is_some(), given > 0, self.policy.is_some()].iter().filter(|x| **x).count();
        if kinds > 1 {
            return Err(s3_error!(
                InvalidRequest,
                "give a canned ACL, grant headers or an AccessControlPolicy, not more than one"
            ));
        }
        let acl = if let Some(c) = self.canned {
            Acl::canned(c).ok_or_else(|| s3_error!(InvalidArgument, "unknown canned ACL {c:?}"))?
        } else if given > 0 {
            let mut grants = Vec::new();
            for (h, perm) in headers {
                if let Some(h) = h {
                    grants.extend(parse_grant_header(h, perm).map_err(|m| s3_error!(InvalidArgument, "{m}"))?);
                }
            }
            Acl { grants }
        } else if let Some(p) = self.policy {
            let mut grants = Vec::new();
            for g in p.grants.iter().flatten() {
                let perm = g
                    .permission
                    .as_ref()
                    .and_then(|p| Perm::parse(p.as_str()))
                    .ok_or_else(|| s3_error!(MalformedACLError, "a grant without a known permission"))?;
                let e = g.grantee.as_ref().ok_or_else(|| s3_error!(MalformedACLError, "a grant without a grantee"))?;
                let who = match e.type_.as_str() {
                    Type::CANONICAL_USER => Who::Tenant(
                        e.id.clone()
                            .ok_or_else(|| s3_error!(MalformedACLError, "a CanonicalUser grantee without ID"))?,
                    ),
                    Type::GROUP => e
                        .uri
                        .as_deref()
                        .and_then(group)
                        .ok_or_else(|| s3_error!(MalformedACLError, "an unknown grantee group"))?,
                    _ => {
                        return Err(s3_error!(
                            UnresolvableGrantByEmailAddress,
                            "grants by e-mail address are not supported"
                        ))
                    }
                };
                grants.push(Grant { who, perm });
            }
            Acl { grants }
        } else {
            return Ok(None);
        };
        if acl.grants.len() > GRANTS_MAX {
            return Err(s3_error!(MalformedACLError, "at most {GRANTS_MAX} grants"));
        }
        for g in &acl.grants {
            if let Who::Tenant(t) = &g.who {
                if !gw.catalog.tenant_exists(t).await? {
                    return Err(s3_error!(InvalidArgument, "Invalid id: no tenant {t:?}"));
                }
            }
        }
        Ok(Some(acl))
    }
}

/// The grants of an ACL as S3 lists them: the owner's `FULL_CONTROL` first.
fn listed(tenant: &str, acl: &Acl) -> Vec<dto::Grant> {
    let person = |id: &str| Grantee {
        type_: Type::from_static(Type::CANONICAL_USER),
        id: Some(id.to_owned()),
        display_name: Some(id.to_owned()),
        email_address: None,
        uri: None,
    };
    let grp = |uri: &str| Grantee {
        type_: Type::from_static(Type::GROUP),
        uri: Some(uri.to_owned()),
        id: None,
        display_name: None,
        email_address: None,
    };
    let grant =
        |g: Grantee, p: Perm| dto::Grant { grantee: Some(g), permission: Some(Permission::from(p.name().to_owned())) };
    // Group grants first, then the owner's, then other accounts' (as RGW lists them:
    // clients that sort grants by display name meet a named grant first only when
    // every grant has a name).
    let mut groups = Vec::new();
    let mut out = vec![grant(person(tenant), Perm::FullControl)];
    for g in &acl.grants {
        match &g.who {
            Who::Tenant(t) => out.push(grant(person(t), g.perm)),
            Who::AllUsers => groups.push(grant(grp(ALL_USERS), g.perm)),
            Who::AuthenticatedUsers => groups.push(grant(grp(AUTHENTICATED_USERS), g.perm)),
        }
    }
    groups.extend(out);
    groups
}

pub(super) async fn get_bucket_acl(
    gw: &Gateway,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::ReadAcp).await?;
    let acl = gw.bucket_acl(&b.name).await?;
    Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner(&b.tenant)), grants: Some(listed(&b.tenant, &acl)) }))
}

pub(super) async fn put_bucket_acl(
    gw: &Gateway,
    req: S3Request<PutBucketAclInput>,
) -> S3Result<S3Response<PutBucketAclOutput>> {
    let b = gw.bucket_for(&req, &req.input.bucket, Perm::WriteAcp).await?;
    let i = &req.input;
    let r = AclRequest::of(i.acl.as_ref().map(|a| a.as_str()), i.into(), i.access_control_policy.as_ref());
    let acl = r.acl(gw).await?.ok_or_else(|| s3_error!(MissingSecurityHeader, "give an ACL to set"))?;
    set_bucket_acl(gw, &b, &acl).await?;
    Ok(S3Response::new(PutBucketAclOutput::default()))
}

pub(super) async fn set_bucket_acl(gw: &Gateway, b: &BucketRec, acl: &Acl) -> S3Result<()> {
    let doc = (!acl.grants.is_empty()).then(|| serde_json::to_string(acl).expect("plain data"));
    gw.catalog.set_bucket_config(b, ConfigKind::Acl, doc.as_deref()).await?;
    Ok(())
}

pub(super) async fn get_object_acl(
    gw: &Gateway,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let (b, o) = gw.object_for(&req, &i.bucket, &i.key, version, Perm::ReadAcp).await?;
    let acl = o.info.acl.unwrap_or_default();
    Ok(S3Response::new(GetObjectAclOutput {
        owner: Some(owner(&b.tenant)),
        grants: Some(listed(&b.tenant, &acl)),
        ..Default::default()
    }))
}

pub(super) async fn put_object_acl(
    gw: &Gateway,
    req: S3Request<PutObjectAclInput>,
) -> S3Result<S3Response<PutObjectAclOutput>> {
    let i = &req.input;
    let version = super::versioning::version_arg(i.version_id.as_deref())?;
    let (b, _) = gw.object_for(&req, &i.bucket, &i.key, version, Perm::WriteAcp).await?;
    let r = AclRequest::of(i.acl.as_ref().map(|a| a.as_str()), i.into(), i.access_control_policy.as_ref());
    let acl = r.acl(gw).await?.ok_or_else(|| s3_error!(MissingSecurityHeader, "give an ACL to set"))?;
    let acl = (!acl.grants.is_empty()).then_some(acl);
    if !gw
        .catalog
        .update_object_info(&b, &i.key, version, |info| {
            info.acl = acl.clone();
            Ok(())
        })
        .await?
    {
        return Err(s3_error!(NoSuchKey));
    }
    Ok(S3Response::new(PutObjectAclOutput::default()))
}
