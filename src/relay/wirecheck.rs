//! Allocation-free reading of a signed `Submission` that carries a `ComplianceReport`, for the
//! intake hot path: a 35-setting report decoded with prost costs some 150 small allocations
//! (every string), only to be checked and dropped again, since the relay spools the signed
//! bytes as they came.
//!
//! This reader is a fast path, never the judge: it says yes only when decoding with prost
//! would succeed and [`crate::compliance::report::validate_report`] would accept the result. Anything it does not
//! plainly understand — a wrong wire type, a field given twice, a group, invalid UTF-8, a
//! failed check — makes it say no, and the caller then runs the full decode and checks, whose
//! refusal is the one the agent gets.

use prost::encoding::{WireType, decode_key, decode_varint};

use crate::compliance::report::{MAX_SETTINGS, is_report_id, is_report_text};
use crate::proto;

/// The top-level fields of a `Submission` whose body is a compliance report.
pub(crate) struct ReportSubmission<'a> {
    pub message_id: &'a str,
    pub device_id: &'a str,
    pub created_unix_ms: i64,
    report: &'a [u8],
}

impl ReportSubmission<'_> {
    /// Whether the report passes every body check (see the module doc for what "no" means).
    pub fn report_is_valid(&self) -> bool {
        report_ok(self.report).is_some()
    }
}

/// Reads an encoded `Submission`; `None` unless it decodes cleanly and its body is a
/// compliance report.
pub(crate) fn report_submission(mut b: &[u8]) -> Option<ReportSubmission<'_>> {
    let (mut message_id, mut device_id, mut created, mut report) = ("", "", 0i64, None);
    let mut seen = 0u32;
    while !b.is_empty() {
        let (tag, wt) = decode_key(&mut b).ok()?;
        match (tag, wt) {
            (1, WireType::LengthDelimited) => message_id = text(&mut b)?,
            (2, WireType::LengthDelimited) => device_id = text(&mut b)?,
            (3, WireType::Varint) => created = decode_varint(&mut b).ok()? as i64,
            (10, WireType::LengthDelimited) => report = Some(bytes(&mut b)?),
            // Other bodies, and known fields with the wrong wire type, go the slow way.
            (1..=3 | 10..=12, _) => return None,
            _ => skip(wt, &mut b)?,
        }
        once(&mut seen, tag)?;
    }
    Some(ReportSubmission {
        message_id,
        device_id,
        created_unix_ms: created,
        report: report?,
    })
}

fn report_ok(mut b: &[u8]) -> Option<()> {
    let (mut baseline_id, mut baseline_name, mut evaluated) = ("", "", 0i64);
    let mut settings = 0usize;
    let mut seen = 0u32;
    while !b.is_empty() {
        let (tag, wt) = decode_key(&mut b).ok()?;
        match (tag, wt) {
            (1, WireType::LengthDelimited) => baseline_id = text(&mut b)?,
            (2, WireType::Varint) => {
                decode_varint(&mut b).ok()?;
            }
            (3, WireType::LengthDelimited) => baseline_name = text(&mut b)?,
            (4, WireType::Varint) => evaluated = decode_varint(&mut b).ok()? as i64,
            (5, WireType::LengthDelimited) => settings += ci_ok(bytes(&mut b)?)?,
            (1..=5, _) => return None,
            _ => skip(wt, &mut b)?,
        }
        if tag != 5 && once(&mut seen, tag).is_none() {
            return None;
        }
    }
    (is_report_id(baseline_id)
        && is_report_text(baseline_name)
        && evaluated > 0
        && settings <= MAX_SETTINGS)
        .then_some(())
}

/// Checks one configuration item; returns how many settings it has.
fn ci_ok(mut b: &[u8]) -> Option<usize> {
    let (mut ci_id, mut ci_name, mut membership) = ("", "", 0i32);
    let mut settings = 0usize;
    let mut seen = 0u32;
    while !b.is_empty() {
        let (tag, wt) = decode_key(&mut b).ok()?;
        match (tag, wt) {
            (1, WireType::LengthDelimited) => ci_id = text(&mut b)?,
            (2, WireType::Varint) => {
                decode_varint(&mut b).ok()?;
            }
            (3, WireType::LengthDelimited) => ci_name = text(&mut b)?,
            (4, WireType::Varint) => membership = decode_varint(&mut b).ok()? as i32,
            (5, WireType::LengthDelimited) => {
                setting_ok(bytes(&mut b)?)?;
                settings += 1;
            }
            (1..=5, _) => return None,
            _ => skip(wt, &mut b)?,
        }
        if tag != 5 && once(&mut seen, tag).is_none() {
            return None;
        }
    }
    (is_report_id(ci_id)
        && is_report_text(ci_name)
        && proto::Membership::try_from(membership).is_ok())
    .then_some(settings)
}

fn setting_ok(mut b: &[u8]) -> Option<()> {
    let (mut setting_id, mut state, mut severity) = ("", 0i32, 0i32);
    let mut texts_ok = true;
    let mut seen = 0u32;
    while !b.is_empty() {
        let (tag, wt) = decode_key(&mut b).ok()?;
        match (tag, wt) {
            (1, WireType::LengthDelimited) => setting_id = text(&mut b)?,
            (2, WireType::Varint) => state = decode_varint(&mut b).ok()? as i32,
            (3, WireType::Varint) => severity = decode_varint(&mut b).ok()? as i32,
            // expected, observed before, observed after, error: bounded texts.
            (4..=6 | 8, WireType::LengthDelimited) => texts_ok &= is_report_text(text(&mut b)?),
            (7, WireType::Varint) => {
                decode_varint(&mut b).ok()?;
            }
            (1..=8, _) => return None,
            _ => skip(wt, &mut b)?,
        }
        once(&mut seen, tag)?;
    }
    (texts_ok
        && is_report_id(setting_id)
        && proto::ComplianceState::try_from(state).is_ok()
        && proto::Severity::try_from(severity).is_ok())
    .then_some(())
}

/// Marks a field seen; `None` when it was already (prost would keep only the last value, so a
/// repeated singular field goes the slow way).
fn once(seen: &mut u32, tag: u32) -> Option<()> {
    if tag > 31 {
        return Some(());
    }
    let bit = 1u32 << tag;
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(decode_varint(b).ok()?).ok()?;
    if len > b.len() {
        return None;
    }
    let (v, rest) = b.split_at(len);
    *b = rest;
    Some(v)
}

fn text<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(bytes(b)?).ok()
}

fn skip(wt: WireType, b: &mut &[u8]) -> Option<()> {
    match wt {
        WireType::Varint => {
            decode_varint(b).ok()?;
        }
        WireType::SixtyFourBit => *b = b.get(8..)?,
        WireType::ThirtyTwoBit => *b = b.get(4..)?,
        WireType::LengthDelimited => {
            bytes(b)?;
        }
        WireType::StartGroup | WireType::EndGroup => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::compliance::report::MAX_TEXT;
    use crate::proto::{Submission, submission::Body};

    fn encode(report: proto::ComplianceReport) -> Vec<u8> {
        Submission {
            message_id: "0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c".into(),
            device_id: "ab".repeat(16),
            created_unix_ms: 1_760_000_000_000,
            body: Some(Body::ComplianceReport(report)),
        }
        .encode_to_vec()
    }

    /// The fast path agrees with prost and `validate_report` wherever it says yes, and says yes
    /// to ordinary reports.
    #[test]
    fn agrees_with_the_full_decode() {
        let full = |b: &[u8]| -> bool {
            match Submission::decode(b) {
                Ok(Submission {
                    body: Some(Body::ComplianceReport(r)),
                    ..
                }) => crate::compliance::report::validate_report(&r).is_ok(),
                _ => false,
            }
        };
        let good = crate::sample::report_with_settings(35, 7);
        let b = encode(good.clone());
        let fast = report_submission(&b).expect("reads");
        assert_eq!(fast.message_id, "0190f2d4-8c3b-7f00-9c1e-2b8f3e4a5d6c");
        assert_eq!(fast.created_unix_ms, 1_760_000_000_000);
        assert!(fast.report_is_valid() && full(&b));

        let mut variants: Vec<Vec<u8>> = Vec::new();
        let mut r = good.clone();
        r.baseline_id.clear();
        variants.push(encode(r));
        let mut r = good.clone();
        r.evaluated_unix_ms = 0;
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].membership = 9;
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].settings[2].state = 42;
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[1].settings[0].severity = -1;
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].settings[0].expected = "x".repeat(MAX_TEXT + 1);
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].settings[0].observed_after = Some("y".repeat(MAX_TEXT + 1));
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].ci_id = "c".repeat(129);
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[0].settings[0].observed_before = Some("a\0b".into());
        variants.push(encode(r));
        let mut r = good.clone();
        r.configuration_items[1].settings[0].setting_id = "s\0".into();
        variants.push(encode(r));
        // Truncated, and every single-bit flip of a few early bytes.
        variants.push(b[..b.len() - 3].to_vec());
        for i in 0..64 {
            let mut x = b.clone();
            x[i % b.len()] ^= 1 << (i % 8);
            variants.push(x);
        }
        // A field given twice: prost keeps the last, the fast path declines.
        let mut twice = b.clone();
        twice.extend_from_slice(&[0x18, 0x01]);
        variants.push(twice);
        for v in &variants {
            if let Some(f) = report_submission(v)
                && f.report_is_valid()
            {
                assert!(
                    full(v),
                    "fast path accepted what the full decode refuses: {v:?}"
                );
            }
        }
        // The invalid reports above are refused by both.
        for v in &variants[..8] {
            assert!(!full(v));
            assert!(!report_submission(v).is_some_and(|f| f.report_is_valid()));
        }
    }
}
