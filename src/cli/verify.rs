//! `mprelay report verify`: proof of what a device sent, for one report by message id or for a
//! device's reports since a date ([`crate::site::verify`] does the checking).

use std::fmt::Write as _;

use anyhow::Context;
use clap::Args;

use super::format::{FormatArg, render};
use super::{DbArg, Failure, records, usage};
use crate::ids::MessageId;
use crate::site::verify::{Verdict, verify_report};
use crate::store::Store;

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    pub(super) db: DbArg,
    /// The report's message id (a UUID).
    #[arg(conflicts_with = "device", required_unless_present = "device")]
    message_id: Option<String>,
    /// Verify every report of this device instead (32 hex characters).
    #[arg(long)]
    device: Option<String>,
    /// With --device: only reports received on or after this date (YYYY-MM-DD, UTC) or instant
    /// (RFC 3339).
    #[arg(long, requires = "device")]
    since: Option<String>,
    #[command(flatten)]
    format: FormatArg,
}

pub(super) async fn report_verify(store: &Store, a: &VerifyArgs) -> Result<(), Failure> {
    let ids = match (&a.message_id, &a.device) {
        (Some(id), _) => {
            let id: MessageId = id
                .parse()
                .map_err(|_| usage(format!("message id {id:?} is not a UUID")))?;
            vec![id.to_string()]
        }
        (None, Some(device)) => {
            let since = a.since.as_deref().map(since_ms).transpose()?.unwrap_or(0);
            let device = device.to_ascii_lowercase();
            if store
                .device(&device)
                .await
                .context("reading the device")?
                .is_none()
            {
                return Err(usage(format!("no device {device:?} is known at this site")));
            }
            store
                .device_report_ids(&device, since)
                .await
                .context("listing the device's reports")?
        }
        (None, None) => return Err(usage("give a MESSAGE_ID or --device ID")),
    };
    let mut verdicts = Vec::with_capacity(ids.len());
    for id in &ids {
        match verify_report(store, id)
            .await
            .with_context(|| format!("verifying report {id}"))?
        {
            Some(v) => verdicts.push(v),
            None => return Err(usage(format!("no report {id} is stored at this site"))),
        }
    }
    print!(
        "{}",
        render(
            a.format.format,
            || table(&verdicts),
            || records::verdicts_json(&verdicts),
            || records::verdicts_csv(&verdicts),
        )
    );
    let failed = verdicts.iter().filter(|v| !v.verified()).count();
    if failed > 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "{failed} of {} reports do not verify",
            verdicts.len()
        )));
    }
    Ok(())
}

/// `verified` per report, or what is wrong with it: one line per problem and per difference.
fn table(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    if verdicts.is_empty() {
        out.push_str("no reports to verify\n");
    }
    for v in verdicts {
        if v.verified() {
            let _ = writeln!(out, "{} verified", v.message_id);
            continue;
        }
        let _ = writeln!(
            out,
            "{} NOT verified (device {})",
            v.message_id, v.device_id
        );
        if let Some(p) = &v.problem {
            let _ = writeln!(out, "  {p}");
        }
        for d in &v.differences {
            let _ = writeln!(
                out,
                "  {}: stored {}, signed {}",
                d.field, d.stored, d.signed
            );
        }
    }
    out
}

/// `--since` as milliseconds since the epoch: a date is its first instant, UTC.
fn since_ms(s: &str) -> Result<i64, Failure> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_millisecond())
        .ok_or_else(|| {
            usage(format!(
                "--since: {s:?} is not a date (YYYY-MM-DD) or an RFC 3339 instant"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_an_instant_and_refuses_anything_else() {
        assert!(matches!(since_ms("2026-12-01"), Ok(1_796_083_200_000)));
        assert!(matches!(
            since_ms("2026-12-01T00:00:01Z"),
            Ok(1_796_083_201_000)
        ));
        assert!(matches!(since_ms("yesterday"), Err(Failure::Usage(_))));
    }
}
