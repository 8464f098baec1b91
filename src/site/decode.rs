//! Turns a relay's `ForwardBatch` into a [`WriteBatch`]: each record is decoded on its own, its
//! device signature verified again (the site does not have to trust the relay), and anything
//! that fails is quarantined with its bytes and the reason instead of being dropped or wedging
//! the pipeline. The signatures of a batch are checked together by batch verification first
//! ([`envelope::all_signatures_verify`]); only where that fails is each checked on its own.

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::compliance::{Severity, State, rollup_report};
use crate::envelope;
use crate::ids::{DeviceId, DevicePublicKey, MessageId};
use crate::proto::{
    self, ComplianceState, ForwardRecord, Submission, forward_record::Record, submission::Body,
};
use crate::store::{
    AcceptanceRow, DeviceDetails, DeviceUpsert, QuarantineRow, ReportRow, SettingRow, WriteBatch,
};

/// The header fields of a batch, and its records as raw bytes.
#[derive(Debug, Default)]
pub struct RawBatch {
    pub relay_id: String,
    pub spool_id: String,
    pub last_seq: u64,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub records: Vec<bytes::Bytes>,
}

/// Splits a `ForwardBatch` body into header and raw records without decoding the records, so
/// one bad record cannot make the whole batch unreadable. Fails only if the framing is broken.
pub fn split_batch(mut body: bytes::Bytes) -> Result<RawBatch, String> {
    use bytes::Buf;
    let mut out = RawBatch::default();
    while body.has_remaining() {
        let (tag, wt) = decode_key(&mut body).map_err(|e| e.to_string())?;
        match (tag, wt) {
            (1, WireType::LengthDelimited)
            | (2, WireType::LengthDelimited)
            | (3, WireType::LengthDelimited) => {
                let len = decode_varint(&mut body).map_err(|e| e.to_string())? as usize;
                if len > body.remaining() {
                    return Err(format!("field {tag} is truncated"));
                }
                let v = body.split_to(len);
                match tag {
                    1 => out.relay_id = String::from_utf8_lossy(&v).into_owned(),
                    2 => out.spool_id = String::from_utf8_lossy(&v).into_owned(),
                    _ => out.records.push(v),
                }
            }
            (4, WireType::Varint) => {
                out.last_seq = decode_varint(&mut body).map_err(|e| e.to_string())?
            }
            (5, WireType::Varint) => {
                out.pending_records = decode_varint(&mut body).map_err(|e| e.to_string())?
            }
            (6, WireType::Varint) => {
                out.pending_bytes = decode_varint(&mut body).map_err(|e| e.to_string())?
            }
            (_, wt) => prost::encoding::skip_field(wt, tag, &mut body, Default::default())
                .map_err(|e| e.to_string())?,
        }
    }
    Ok(out)
}

/// The seq of a raw record: its first field, as the relay writes it.
fn leading_seq(raw: &[u8]) -> Option<u64> {
    let mut b = raw;
    match decode_key(&mut b) {
        Ok((1, WireType::Varint)) => decode_varint(&mut b).ok(),
        _ => None,
    }
}

/// Decodes every record of `raw` (those with seq > `skip_through`) into rows to store. Returns
/// the batch and the highest seq seen.
pub fn decode_batch(
    raw: &RawBatch,
    relay_url: &str,
    skip_through: u64,
    verify: bool,
) -> (WriteBatch, u64) {
    let mut wb = WriteBatch {
        relay_id: raw.relay_id.clone(),
        relay_url: relay_url.into(),
        spool_id: raw.spool_id.clone(),
        last_seq: raw.last_seq,
        pending_records: raw.pending_records,
        pending_bytes: raw.pending_bytes,
        ..Default::default()
    };
    let mut max_seq = skip_through;
    let records: Vec<_> = raw
        .records
        .iter()
        .map(|bytes| (bytes, ForwardRecord::decode(bytes.as_ref())))
        .collect();
    let prechecked = if verify {
        batch_verified(&records, skip_through)
    } else {
        Vec::new()
    };
    for (i, (bytes, rec)) in records.iter().enumerate() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let seq = leading_seq(bytes).unwrap_or(0);
                max_seq = max_seq.max(seq);
                if seq > skip_through || seq == 0 {
                    wb.quarantined.push(QuarantineRow {
                        seq,
                        message_id: String::new(),
                        received_ms: 0,
                        reason: format!("record does not decode: {e}"),
                        payload: bytes.to_vec(),
                    });
                }
                continue;
            }
        };
        max_seq = max_seq.max(rec.seq);
        if rec.seq <= skip_through {
            continue;
        }
        let verify = verify && !prechecked.get(i).copied().unwrap_or(false);
        if let Err(reason) = add_record(&mut wb, rec, verify) {
            wb.quarantined.push(QuarantineRow {
                seq: rec.seq,
                message_id: rec.message_id.clone(),
                received_ms: rec.received_unix_ms,
                reason,
                payload: bytes.to_vec(),
            });
        }
    }
    wb.through_seq = max_seq;
    (wb, max_seq)
}

/// Submissions whose signatures are checked together by batch verification.
const SIGNATURE_BATCH: usize = 128;

/// Which records' device signatures are already proven, by [`envelope::all_signatures_verify`]
/// over groups of [`SIGNATURE_BATCH`] submissions: a group that passes is proven as a whole; in
/// a group that does not, each record is checked on its own by [`add_record`] (which alone
/// decides what is quarantined), so one bad signature costs its group a second, single check.
fn batch_verified(
    records: &[(&bytes::Bytes, Result<ForwardRecord, prost::DecodeError>)],
    skip_through: u64,
) -> Vec<bool> {
    let mut proven = vec![false; records.len()];
    let candidates: Vec<(usize, DevicePublicKey, &proto::VerifiedSubmission)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, (_, rec))| {
            let rec = rec.as_ref().ok().filter(|r| r.seq > skip_through)?;
            let Some(Record::Submission(v)) = &rec.record else {
                return None;
            };
            let pk = DevicePublicKey::try_from(v.device_public_key.as_slice()).ok()?;
            Some((i, pk, v))
        })
        .collect();
    for group in candidates.chunks(SIGNATURE_BATCH) {
        let items: Vec<envelope::SignedBytes<'_>> = group
            .iter()
            .map(|(_, pk, v)| (pk, v.submission.as_slice(), v.signature.as_slice()))
            .collect();
        if envelope::all_signatures_verify(&items) {
            for (i, _, _) in group {
                proven[*i] = true;
            }
        }
    }
    proven
}

fn add_record(wb: &mut WriteBatch, rec: &ForwardRecord, verify: bool) -> Result<(), String> {
    match &rec.record {
        Some(Record::Enrollment(e)) => {
            let pk = DevicePublicKey::try_from(e.device_public_key.as_slice())
                .map_err(|_| "enrollment: public key is not 32 bytes".to_string())?;
            if DeviceId::from_public_key(&pk).hex() != e.device_id {
                return Err("enrollment: device id does not match its public key".into());
            }
            // The relay refuses these; a record from an older relay is kept aside instead of
            // failing the batch on a database that cannot store NUL characters.
            if [&e.hostname, &e.os, &e.agent_version, &e.hardware_id]
                .iter()
                .any(|v| v.contains('\0'))
            {
                return Err("enrollment: a text field contains a NUL character".into());
            }
            wb.devices.push(DeviceUpsert {
                device_id: e.device_id.clone(),
                public_key: e.device_public_key.clone(),
                key_epoch: e.key_epoch,
                details: Some(DeviceDetails {
                    hostname: e.hostname.clone(),
                    os: e.os.clone(),
                    agent_version: e.agent_version.clone(),
                    hardware_id: e.hardware_id.clone(),
                }),
                seen_ms: rec.received_unix_ms,
                relay_id: wb.relay_id.clone(),
            });
            Ok(())
        }
        Some(Record::Submission(v)) => {
            let pk = DevicePublicKey::try_from(v.device_public_key.as_slice())
                .map_err(|_| "submission: public key is not 32 bytes".to_string())?;
            if DeviceId::from_public_key(&pk).hex() != v.device_id {
                return Err("submission: device id does not match its public key".into());
            }
            if verify {
                envelope::verify_signature(&pk, &v.submission, &v.signature)
                    .map_err(|_| "submission: device signature does not verify".to_string())?;
            }
            let sub = Submission::decode(v.submission.as_slice())
                .map_err(|e| format!("submission does not decode: {e}"))?;
            if sub.device_id != v.device_id {
                return Err("submission: inner device id differs from the envelope's".into());
            }
            let message_id: MessageId = sub
                .message_id
                .parse()
                .map_err(|_| "submission: message id is not a UUID".to_string())?;
            if message_id.to_string() != rec.message_id.to_lowercase() {
                return Err("submission: message id differs from the record's".into());
            }
            wb.devices.push(DeviceUpsert {
                device_id: v.device_id.clone(),
                public_key: v.device_public_key.clone(),
                key_epoch: v.key_epoch,
                details: None,
                seen_ms: rec.received_unix_ms,
                relay_id: wb.relay_id.clone(),
            });
            match &sub.body {
                Some(Body::ComplianceReport(r)) => {
                    crate::compliance::report::validate_report(r).map_err(|e| e.message())?;
                    let row = report_row(&wb.relay_id, rec, &sub, message_id, r, v);
                    wb.reports.push(row);
                    Ok(())
                }
                Some(Body::TermsAcceptance(t)) => {
                    crate::relay::validate_acceptance(t).map_err(|e| e.message())?;
                    wb.acceptances.push(AcceptanceRow {
                        message_id: message_id.to_string(),
                        device_id: v.device_id.clone(),
                        user: t.user.clone(),
                        terms_version: t.terms_version,
                        accepted_ms: t.accepted_unix_ms,
                        received_ms: rec.received_unix_ms,
                        relay_id: wb.relay_id.clone(),
                    });
                    Ok(())
                }
                _ => Err("submission carries neither a report nor a terms acceptance".into()),
            }
        }
        None => Err("record carries nothing".into()),
    }
}

/// The report row the writer would store for `signed` (a device's stored signed bytes), as if
/// it arrived now through relay `relay_id` at `received_ms`: the same decode, checks and rollup
/// as a forwarded record, without the signature check (the caller checks it and says so). The
/// message id and device id are taken from the signed bytes, so a stored row that names others
/// shows as a difference rather than a refusal.
pub fn signed_report_row(
    signed: &[u8],
    public_key: &[u8],
    received_ms: i64,
    relay_id: &str,
) -> Result<ReportRow, String> {
    let sub = Submission::decode(signed).map_err(|e| format!("submission does not decode: {e}"))?;
    let rec = ForwardRecord {
        seq: 1,
        message_id: sub.message_id.to_lowercase(),
        received_unix_ms: received_ms,
        record: Some(Record::Submission(proto::VerifiedSubmission {
            device_id: sub.device_id.clone(),
            device_public_key: public_key.to_vec(),
            key_epoch: 0,
            submission: signed.to_vec(),
            signature: Vec::new(),
        })),
    };
    let mut wb = WriteBatch {
        relay_id: relay_id.into(),
        ..Default::default()
    };
    add_record(&mut wb, &rec, false)?;
    wb.reports
        .pop()
        .ok_or_else(|| "the signed submission is not a compliance report".to_string())
}

fn report_row(
    relay_id: &str,
    rec: &ForwardRecord,
    sub: &Submission,
    message_id: MessageId,
    r: &proto::ComplianceReport,
    v: &proto::VerifiedSubmission,
) -> ReportRow {
    let settings = r
        .configuration_items
        .iter()
        .flat_map(|ci| {
            ci.settings.iter().map(move |s| SettingRow {
                ci_id: ci.ci_id.clone(),
                ci_revision: ci.ci_revision,
                setting_id: s.setting_id.clone(),
                state: State::from(ComplianceState::try_from(s.state).unwrap_or_default()),
                severity: Severity::from(proto::Severity::try_from(s.severity).unwrap_or_default()),
                expected: s.expected.clone(),
                observed_before: s.observed_before.clone(),
                observed_after: s.observed_after.clone(),
                remediated: s.remediated,
                error: s.error.clone(),
            })
        })
        .collect();
    ReportRow {
        message_id: message_id.to_string(),
        device_id: sub.device_id.clone(),
        baseline_id: r.baseline_id.clone(),
        baseline_revision: r.baseline_revision,
        baseline_name: r.baseline_name.clone(),
        created_ms: sub.created_unix_ms,
        evaluated_ms: r.evaluated_unix_ms,
        received_ms: rec.received_unix_ms,
        relay_id: relay_id.into(),
        rollup: rollup_report(r),
        settings,
        signature: v.signature.clone(),
        signed_bytes: v.submission.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ForwardBatch;
    use crate::spool::encode_forward_batch;

    #[test]
    fn a_corrupt_record_is_quarantined_and_the_rest_decoded() {
        let good = ForwardRecord {
            seq: 0,
            message_id: MessageId::new().to_string(),
            received_unix_ms: 5,
            record: Some(Record::Enrollment(proto::DeviceEnrollment {
                device_id: DeviceId::from_public_key(&DevicePublicKey([1; 32])).hex(),
                device_public_key: vec![1; 32],
                key_epoch: 1,
                hostname: "h".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec();
        let header = ForwardBatch {
            relay_id: "r".into(),
            spool_id: "s".into(),
            ..Default::default()
        };
        let body = encode_forward_batch(&header, &[(1, good), (2, vec![0xff, 0xff, 0x01])]);
        let raw = split_batch(body.into()).unwrap();
        assert_eq!(raw.relay_id, "r");
        let (wb, max) = decode_batch(&raw, "https://x", 0, true);
        assert_eq!(max, 2);
        assert_eq!(wb.devices.len(), 1);
        assert_eq!(wb.quarantined.len(), 1);
        assert_eq!(wb.quarantined[0].seq, 2);
        // Already-stored records are skipped.
        let (wb, _) = decode_batch(&raw, "https://x", 1, true);
        assert_eq!(wb.devices.len(), 0);
    }

    /// A forward record of a report signed by `signer`; `tamper` flips a bit of its signature.
    fn signed_record(signer: &envelope::DeviceSigner, seq: u64, tamper: bool) -> Vec<u8> {
        let message_id = MessageId::new().to_string();
        let sub = Submission {
            message_id: message_id.clone(),
            device_id: signer.device_id().hex(),
            created_unix_ms: 1_700_000_000_000,
            body: Some(Body::ComplianceReport(crate::sample::report_with_settings(
                3, seq,
            ))),
        }
        .encode_to_vec();
        let mut signature = signer.sign(&sub);
        if tamper {
            signature[5] ^= 1;
        }
        ForwardRecord {
            seq,
            message_id,
            received_unix_ms: 1_700_000_000_000,
            record: Some(Record::Submission(proto::VerifiedSubmission {
                device_id: signer.device_id().hex(),
                device_public_key: signer.public_key().as_bytes().to_vec(),
                key_epoch: 1,
                submission: sub,
                signature,
            })),
        }
        .encode_to_vec()
    }

    fn batch_of(records: Vec<(u64, Vec<u8>)>) -> RawBatch {
        let header = ForwardBatch {
            relay_id: "r".into(),
            spool_id: "s".into(),
            ..Default::default()
        };
        split_batch(encode_forward_batch(&header, &records).into()).unwrap()
    }

    #[test]
    fn a_forged_signature_among_many_is_quarantined_and_the_rest_stored() {
        let signers: Vec<_> = (0..4u8)
            .map(|i| envelope::DeviceSigner::from_seed(&[i + 1; 32]))
            .collect();
        // 300 reports span three signature batches; the forged one sits in the second.
        let records: Vec<(u64, Vec<u8>)> = (1..=300u64)
            .map(|seq| {
                let s = &signers[seq as usize % signers.len()];
                (seq, signed_record(s, seq, seq == 200))
            })
            .collect();
        let (wb, max) = decode_batch(&batch_of(records.clone()), "https://x", 0, true);
        assert_eq!(max, 300);
        assert_eq!(wb.reports.len(), 299);
        assert_eq!(wb.quarantined.len(), 1);
        assert_eq!(wb.quarantined[0].seq, 200);
        assert_eq!(
            wb.quarantined[0].reason,
            "submission: device signature does not verify"
        );

        // Every signature good: all stored, nothing quarantined.
        let good: Vec<_> = records
            .into_iter()
            .map(|(seq, r)| {
                if seq == 200 {
                    (seq, signed_record(&signers[0], seq, false))
                } else {
                    (seq, r)
                }
            })
            .collect();
        let (wb, _) = decode_batch(&batch_of(good), "https://x", 0, true);
        assert_eq!((wb.reports.len(), wb.quarantined.len()), (300, 0));
    }
}
