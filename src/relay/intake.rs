//! The agent-facing endpoints: `POST /v1/enroll`, `POST /v1/submissions`, `POST /v1/policy`.

use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prost::Message;
use ring::digest;
use subtle::ConstantTimeEq;
use tracing::{debug, error, info};

use super::{RelayState, wirecheck};
use crate::clock::DAY_MS;
use crate::compliance::report::{check_no_nul, validate_report};
use crate::envelope::{self, Opened};
use crate::ids::{DeviceId, DevicePublicKey, MessageId};
use crate::net::Peer;
use crate::net::server::{check_content_length, read_body};
use crate::policy::collection::Facts;
use crate::proto::{
    self, DeviceEnrollment, EnrollRequest, EnrollResponse, ForwardRecord, PolicyResponse,
    Submission, SubmissionReceipt, TermsAcceptance, VerifiedSubmission, forward_record,
    submission::Body,
};
use crate::spool::{Appended, NewRecord, SpoolError};
use crate::wire::{Refusal, protobuf_response};

type Resp = Result<Response<Full<Bytes>>, Refusal>;

async fn body(st: &RelayState, req: Request<Incoming>) -> Result<Bytes, Refusal> {
    check_content_length(&req, &st.agent_limits)?;
    read_body(req.into_body(), &st.agent_limits).await
}

pub(super) async fn enroll(st: &RelayState, req: Request<Incoming>, peer: &Peer) -> Resp {
    let body = body(st, req).await?;
    // Rate-limit before looking at the secret, so a flood cannot brute-force it.
    st.enroll_limiter
        .take(peer.addr.ip())
        .map_err(|retry_after| {
            debug!(peer = %peer.addr, "enrollment rate limited");
            Refusal::RateLimited { retry_after }
        })?;
    let er = EnrollRequest::decode(body)
        .map_err(|_| Refusal::Malformed("not an EnrollRequest".into()))?;
    // Digests of equal length, compared in constant time: neither the secret's content nor its
    // length shows in the time a refusal takes.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let ok: bool = digest(&er.enrollment_secret)
        .as_ref()
        .ct_eq(digest(&st.secrets().enrollment_secret).as_ref())
        .into();
    if !ok {
        info!(peer = %peer.addr, "enrollment refused: wrong secret");
        return Err(Refusal::EnrollmentRefused);
    }
    let pk = DevicePublicKey::try_from(er.device_public_key.as_slice())
        .map_err(|_| Refusal::Malformed("device_public_key must be 32 bytes".into()))?;
    for (name, v) in [
        ("hostname", &er.hostname),
        ("os", &er.os),
        ("agent_version", &er.agent_version),
        ("hardware_id", &er.hardware_id),
    ] {
        if v.len() > 255 {
            return Err(Refusal::Malformed(format!(
                "{name} is longer than 255 bytes"
            )));
        }
        if v.contains('\0') {
            return Err(Refusal::Malformed(format!(
                "{name} contains a NUL character"
            )));
        }
    }
    let device_id = DeviceId::from_public_key(&pk);
    if st.is_blocked(&device_id.hex()) {
        return Err(Refusal::DeviceBlocked);
    }
    let secrets = st.secrets();
    let (epoch, master) = secrets.keys.newest();
    let device_key = envelope::derive_device_key(master, &device_id, &pk);

    // The same enrollment repeated maps to the same record id, so it is spooled once; changed
    // details (a new hostname) make a new record and the site updates the device.
    let enrollment = DeviceEnrollment {
        device_id: device_id.hex(),
        device_public_key: pk.as_bytes().to_vec(),
        key_epoch: epoch.get(),
        hostname: er.hostname,
        os: er.os,
        agent_version: er.agent_version,
        hardware_id: er.hardware_id,
    };
    let message_id = enrollment_message_id(&enrollment);
    let now = st.clock.now_ms();
    let record = ForwardRecord {
        seq: 0,
        message_id: message_id.to_string(),
        received_unix_ms: now,
        record: Some(forward_record::Record::Enrollment(enrollment)),
    };
    spool_record(st, message_id, now, record.encode_to_vec()).await?;
    st.metrics
        .enrollments
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    info!(%device_id, %epoch, "device enrolled");
    let resp = EnrollResponse {
        device_id: device_id.hex(),
        key_epoch: epoch.get(),
        device_key: device_key.expose().to_vec(),
        relay_id: st.relay_id.clone(),
    };
    Ok(protobuf_response(StatusCode::OK, resp.encode_to_vec()))
}

/// A UUID (version 8, custom) from the SHA-256 of an enrollment's fields.
fn enrollment_message_id(e: &DeviceEnrollment) -> MessageId {
    let d = digest::digest(&digest::SHA256, &e.encode_to_vec());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    MessageId::from_bytes(b)
}

/// Opens and checks a sealed request through "device not blocked" and the time window: the
/// checks common to submissions and policy requests, in DESIGN's order.
fn open_checked(st: &RelayState, body: &[u8]) -> Result<Opened, Refusal> {
    let opened = envelope::open_bytes(&st.secrets().keys, body)?;
    check_device_and_time(st, &opened.device_id, opened.submission.created_unix_ms)?;
    Ok(opened)
}

pub(super) async fn submit(st: &RelayState, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let body = body(st, req).await?;
    let (verified, message_id) = open_submission(st, &body)?;
    drop(body);
    let now = st.clock.now_ms();
    let record = ForwardRecord {
        seq: 0,
        message_id: message_id.to_string(),
        received_unix_ms: now,
        record: Some(forward_record::Record::Submission(VerifiedSubmission {
            device_id: verified.device_id.hex(),
            device_public_key: verified.public_key.as_bytes().to_vec(),
            key_epoch: verified.epoch.get(),
            submission: verified.submission_bytes,
            signature: verified.signature,
        })),
    };
    let (status, accepted_ms) = spool_record(st, message_id, now, record.encode_to_vec()).await?;
    // Counted here, not in spool_record: enrollments are spooled too but are not submissions.
    let counter = if status == StatusCode::ACCEPTED {
        &st.metrics.accepted
    } else {
        &st.metrics.duplicates
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let receipt = SubmissionReceipt {
        message_id: message_id.to_string(),
        accepted_unix_ms: accepted_ms,
        relay_id: st.relay_id.clone(),
    };
    st.metrics
        .submit_latency
        .observe_duration(started.elapsed());
    Ok(protobuf_response(status, receipt.encode_to_vec()))
}

/// Every check of a submission before it is spooled, in DESIGN's order. A compliance report
/// that passes everything is read without decoding it into owned strings ([`wirecheck`]);
/// anything else — another body, or any refusal — goes through the full decode, which decides
/// the answer.
fn open_submission(
    st: &RelayState,
    body: &[u8],
) -> Result<(envelope::Verified, MessageId), Refusal> {
    let verified = envelope::open_verified_bytes(&st.secrets().keys, body)?;
    if let Some(id) = fast_accept(st, &verified) {
        return Ok((verified, id));
    }
    let submission = Submission::decode(verified.submission_bytes.as_slice())
        .map_err(|_| Refusal::from(envelope::EnvelopeError::Malformed))?;
    if submission.device_id.parse::<DeviceId>().ok() != Some(verified.device_id) {
        return Err(envelope::EnvelopeError::IdentityMismatch.into());
    }
    check_device_and_time(st, &verified.device_id, submission.created_unix_ms)?;
    let message_id: MessageId = submission
        .message_id
        .parse()
        .map_err(|_| Refusal::InvalidReport("message_id is not a canonical UUID".into()))?;
    match &submission.body {
        Some(Body::ComplianceReport(r)) => validate_report(r)?,
        Some(Body::TermsAcceptance(t)) => validate_acceptance(t)?,
        Some(Body::PolicyRequest(_)) => {
            return Err(Refusal::InvalidReport(
                "policy requests go to POST /v1/policy".into(),
            ));
        }
        None => return Err(Refusal::InvalidReport("the submission has no body".into())),
    }
    Ok((verified, message_id))
}

/// The message id when the submission is a compliance report that passes every check.
fn fast_accept(st: &RelayState, v: &envelope::Verified) -> Option<MessageId> {
    let s = wirecheck::report_submission(&v.submission_bytes)?;
    if s.device_id.parse::<DeviceId>().ok() != Some(v.device_id) {
        return None;
    }
    check_device_and_time(st, &v.device_id, s.created_unix_ms).ok()?;
    let id = s.message_id.parse().ok()?;
    s.report_is_valid().then_some(id)
}

/// Whether a sealed body is a compliance report this relay would accept, by the same path
/// intake runs (the benchmarks' ceiling measures this).
pub(crate) fn accepts_report(keys: &crate::envelope::MasterKeys, body: &[u8]) -> bool {
    let Ok(v) = envelope::open_verified_bytes(keys, body) else {
        return false;
    };
    if let Some(s) = wirecheck::report_submission(&v.submission_bytes)
        && s.device_id.parse::<DeviceId>().ok() == Some(v.device_id)
        && s.message_id.parse::<MessageId>().is_ok()
        && s.report_is_valid()
    {
        return true;
    }
    match Submission::decode(v.submission_bytes.as_slice()) {
        Ok(Submission {
            message_id,
            device_id,
            body: Some(Body::ComplianceReport(r)),
            ..
        }) => {
            device_id.parse::<DeviceId>().ok() == Some(v.device_id)
                && message_id.parse::<MessageId>().is_ok()
                && validate_report(&r).is_ok()
        }
        _ => false,
    }
}

/// Device not blocked, created time inside the window.
fn check_device_and_time(st: &RelayState, device: &DeviceId, created: i64) -> Result<(), Refusal> {
    if st.is_blocked(&device.hex()) {
        return Err(Refusal::DeviceBlocked);
    }
    let now = st.clock.now_ms();
    if created > now + st.intake.max_clock_skew.as_millis() as i64 {
        return Err(Refusal::FromTheFuture);
    }
    if created < now - i64::from(st.retention_days()) * DAY_MS {
        return Err(Refusal::Stale);
    }
    Ok(())
}

/// Spools a record; 202 when new, 200 when the id was already known.
async fn spool_record(
    st: &RelayState,
    message_id: MessageId,
    now: i64,
    payload: Vec<u8>,
) -> Result<(StatusCode, i64), Refusal> {
    let retry_after = st.intake.overload_retry_after;
    match st
        .spool
        .append(NewRecord {
            message_id,
            accepted_ms: now,
            payload,
        })
        .await
    {
        Ok(Appended::New { accepted_ms, .. }) => Ok((StatusCode::ACCEPTED, accepted_ms)),
        Ok(Appended::Duplicate { accepted_ms }) => Ok((StatusCode::OK, accepted_ms)),
        Err(SpoolError::Full) => Err(Refusal::Overloaded { retry_after }),
        Err(e) => {
            error!(error = %e, "spool append failed");
            Err(Refusal::Overloaded { retry_after })
        }
    }
}

pub(crate) fn validate_acceptance(t: &TermsAcceptance) -> Result<(), Refusal> {
    if t.user.is_empty() || t.user.len() > 255 {
        return Err(Refusal::InvalidReport("user must be 1 to 255 bytes".into()));
    }
    check_no_nul("user", &t.user)?;
    if t.terms_version == 0 {
        return Err(Refusal::InvalidReport(
            "terms_version must be at least 1".into(),
        ));
    }
    if t.accepted_unix_ms <= 0 {
        return Err(Refusal::InvalidReport("accepted_unix_ms is missing".into()));
    }
    Ok(())
}

pub(super) async fn policy(st: &RelayState, req: Request<Incoming>) -> Resp {
    let body = body(st, req).await?;
    let opened = open_checked(st, &body)?;
    let Some(Body::PolicyRequest(pr)) = opened.submission.body else {
        return Err(Refusal::InvalidReport(
            "POST /v1/policy takes a sealed PolicyRequest".into(),
        ));
    };
    st.metrics
        .policy_served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (snapshot, targeting) = st.policy_with_targeting();
    let policy = match (snapshot, targeting) {
        (Some(p), _) if p.version == pr.known_version => None,
        // Targeted: only the baselines deployed to this device.
        (Some(p), Some(t)) => {
            let device_id = opened.device_id.hex();
            let tags: std::collections::BTreeMap<String, String> = pr
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let facts = Facts {
                device_id: &device_id,
                hostname: &pr.hostname,
                os: &pr.os,
                agent_version: &pr.agent_version,
                key_epoch: opened.epoch.get(),
                last_relay: &st.relay_id,
                // Unknown to the site: it is enrolling about now.
                enrolled_ms: Some(st.clock.now_ms()),
                tags: Some(&tags),
            };
            Some(t.for_device(&p, &facts))
        }
        (Some(p), None) => Some((*p).clone()),
        // No policy pushed yet: the empty snapshot, version 0.
        (None, _) if pr.known_version == 0 => None,
        (None, _) => Some(proto::PolicySnapshot::default()),
    };
    let resp = PolicyResponse {
        unchanged: policy.is_none(),
        policy,
        max_body_bytes: st.agent_limits.max_body_bytes as u64,
        user_terms_version: match pr.user.as_str() {
            "" => 0,
            user => st.user_terms_version(user),
        },
    };
    Ok(protobuf_response(StatusCode::OK, resp.encode_to_vec()))
}
