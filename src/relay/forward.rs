//! The site-facing endpoints (mutual TLS): `GET /v1/forward` (long-poll), `POST /v1/forward/ack`
//! and `PUT /v1/policy`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prost::Message;
use tracing::{debug, error, info};

use super::RelayState;
use crate::net::server::{check_content_length, read_body};
use crate::proto::{ForwardAck, ForwardAckResponse, ForwardBatch, PolicySnapshot};
use crate::spool::{SpoolError, encode_forward_batch};
use crate::wire::{Refusal, protobuf_response};

type Resp = Result<Response<Full<Bytes>>, Refusal>;

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn param<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, Refusal> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            Refusal::Malformed(format!("query parameter {key}={v:?} is not a number"))
        }),
    }
}

pub(super) async fn forward(st: &RelayState, req: Request<Incoming>) -> Resp {
    let q = query(&req);
    let after: u64 = param(&q, "after", 0)?;
    let max: usize = param::<usize>(&q, "max", 1000)?.clamp(1, st.intake.max_forward_records);
    let wait = Duration::from_millis(param(&q, "wait_ms", 0u64)?).min(st.intake.max_forward_wait);
    let spool = &st.spool;
    let storage = |e: SpoolError| {
        error!(error = %e, "reading the spool failed");
        Refusal::Internal
    };
    let mut records = spool
        .read_after(after, max, st.intake.max_forward_bytes)
        .await
        .map_err(storage)?;
    if records.is_empty() && !wait.is_zero() {
        st.forward_waiters.fetch_add(1, Ordering::Relaxed);
        spool
            .wait_for_after(
                after.max(spool.stats().acked_through.load(Ordering::Relaxed)),
                wait,
            )
            .await;
        st.forward_waiters.fetch_sub(1, Ordering::Relaxed);
        records = spool
            .read_after(after, max, st.intake.max_forward_bytes)
            .await
            .map_err(storage)?;
    }
    let stats = spool.stats();
    let header = ForwardBatch {
        relay_id: st.relay_id.clone(),
        spool_id: spool.spool_id().to_string(),
        records: vec![],
        last_seq: stats.last_seq.load(Ordering::Relaxed),
        pending_records: stats.pending_records.load(Ordering::Relaxed),
        pending_bytes: stats.pending_bytes.load(Ordering::Relaxed),
    };
    st.metrics
        .forwarded_records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    debug!(after, records = records.len(), "forward batch");
    Ok(protobuf_response(
        StatusCode::OK,
        encode_forward_batch(&header, &records),
    ))
}

pub(super) async fn ack(st: &RelayState, req: Request<Incoming>) -> Resp {
    check_content_length(&req, &st.site_limits)?;
    let body = read_body(req.into_body(), &st.site_limits).await?;
    let ack =
        ForwardAck::decode(body).map_err(|_| Refusal::Malformed("not a ForwardAck".into()))?;
    match st.spool.ack(&ack.spool_id, ack.through_seq).await {
        Ok(through) => Ok(protobuf_response(
            StatusCode::OK,
            ForwardAckResponse {
                acked_through_seq: through,
            }
            .encode_to_vec(),
        )),
        Err(e @ SpoolError::WrongSpool { .. }) => Err(Refusal::Conflict(e.to_string())),
        Err(e) => {
            error!(error = %e, "acknowledging failed");
            Err(Refusal::Internal)
        }
    }
}

/// The smallest body limit of `PUT /v1/policy`, whatever the site-facing limit.
const MIN_POLICY_BYTES: usize = 16 * 1024 * 1024;

pub(super) async fn put_policy(st: &RelayState, req: Request<Incoming>) -> Resp {
    // A targeted snapshot of a large site is several MiB (1.6 MB of device ids per 100,000).
    let mut limits = st.site_limits.clone();
    limits.max_body_bytes = limits.max_body_bytes.max(MIN_POLICY_BYTES);
    check_content_length(&req, &limits)?;
    let body = read_body(req.into_body(), &limits).await?;
    let snapshot = PolicySnapshot::decode(body.clone())
        .map_err(|_| Refusal::Malformed("not a PolicySnapshot".into()))?;
    if let Some(current) = st.policy_snapshot()
        && snapshot.version < current.version
    {
        return Err(Refusal::Conflict(format!(
            "policy version {} is older than the relay's {}",
            snapshot.version, current.version
        )));
    }
    st.spool
        .save_policy(snapshot.version, body.to_vec())
        .await
        .map_err(|e| {
            error!(error = %e, "storing the policy failed");
            Refusal::Internal
        })?;
    info!(
        version = snapshot.version,
        blocked = snapshot.blocked_device_ids.len(),
        "policy updated"
    );
    st.set_policy(snapshot);
    Ok(protobuf_response(StatusCode::NO_CONTENT, vec![]))
}
