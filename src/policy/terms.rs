//! Terms and conditions, and the privacy statement URL, as the site publishes them.
//!
//! Administrators publish terms with `mprelay terms publish`: the first publication is version
//! 1, `--new-version` publishes the next version (every user must accept again), and a
//! publication without it edits the current version (a typo fix: the version and the
//! acceptances stand). Every version and edit is kept. The current terms travel in the policy
//! snapshot ([`to_proto`]), so the relays hand them to agents with the rest of the policy.
//!
//! The privacy statement URL is a site setting that also travels in the policy; only an
//! `https://` URL with a host is accepted ([`check_privacy_url`]).

use thiserror::Error;

use crate::proto;
use crate::store::{Published, Store, StoreError, TermsDraft, TermsRecord};

/// Longest title and display name, in bytes.
pub const MAX_TITLE: usize = 256;
/// Longest summary, acceptance statement and description, in bytes.
pub const MAX_SHORT_TEXT: usize = 4096;
/// Longest body, in bytes. The terms travel in every policy snapshot, which must fit the
/// relays' request limit (1 MiB by default) beside the baselines.
pub const MAX_BODY: usize = 128 * 1024;
/// Longest privacy statement URL, in bytes.
pub const MAX_URL: usize = 2048;

/// Why terms or a privacy statement URL were refused.
#[derive(Debug, Error)]
pub enum TermsError {
    /// A field of the terms is empty, too long or holds control characters.
    #[error("terms {field}: {why}")]
    Field { field: &'static str, why: String },
    /// The privacy statement URL is not an `https://` URL with a host.
    #[error("privacy statement URL {url:?} is refused: {why}")]
    PrivacyUrl { url: String, why: String },
    /// The site database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a draft, then publishes it (see [`Store::publish_terms`]).
pub async fn publish(
    store: &Store,
    actor: &crate::store::Actor,
    draft: &TermsDraft,
    new_version: bool,
) -> Result<Published, TermsError> {
    check_draft(draft)?;
    Ok(store.publish_terms(actor, draft, new_version).await?)
}

/// Checks each field of a draft: title, body and acceptance statement present, every field
/// within its length, no control characters (line breaks and tabs only in the longer texts).
pub fn check_draft(d: &TermsDraft) -> Result<(), TermsError> {
    check_field("title", &d.title, MAX_TITLE, true, false)?;
    check_field("body", &d.body, MAX_BODY, true, true)?;
    check_field(
        "acceptance statement",
        &d.acceptance_statement,
        MAX_SHORT_TEXT,
        true,
        true,
    )?;
    if let Some(s) = &d.summary {
        check_field("summary", s, MAX_SHORT_TEXT, false, true)?;
    }
    if let Some(s) = &d.display_name {
        check_field("display name", s, MAX_TITLE, false, false)?;
    }
    if let Some(s) = &d.description {
        check_field("description", s, MAX_SHORT_TEXT, false, true)?;
    }
    Ok(())
}

fn check_field(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
    multiline: bool,
) -> Result<(), TermsError> {
    let bad = |why: String| TermsError::Field { field, why };
    if required && value.trim().is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if value.len() > max {
        return Err(bad(format!(
            "is {} bytes long; at most {max} are allowed",
            value.len()
        )));
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if let Some(c) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(bad(format!(
            "holds the control character {:?}{}",
            c,
            if multiline {
                ""
            } else {
                " (it must be one line)"
            }
        )));
    }
    Ok(())
}

/// The terms as they travel in the policy: what users read and accept, not the administrators'
/// labels.
pub fn to_proto(t: &TermsRecord) -> proto::Terms {
    proto::Terms {
        version: t.version,
        title: t.text.title.clone(),
        summary: t.text.summary.clone(),
        body: t.text.body.clone(),
        acceptance_statement: t.text.acceptance_statement.clone(),
        published_unix_ms: t.published_ms,
    }
}

/// Checks a privacy statement URL: `https://`, a host, no user name or password, no spaces.
/// Returns it in normalized form (lowercase host, percent-encoded path), as it is stored.
pub fn check_privacy_url(input: &str) -> Result<String, TermsError> {
    let bad = |why: &str| TermsError::PrivacyUrl {
        url: input.into(),
        why: why.into(),
    };
    if input.is_empty() {
        return Err(bad("it is empty; give an https:// URL"));
    }
    if input.len() > MAX_URL {
        return Err(bad(&format!("it is longer than {MAX_URL} bytes")));
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it holds spaces or control characters"));
    }
    // Checked on the text itself: URL parsing is lenient and would read "https:host" or
    // "https:///host" as URLs with a host.
    let Some(rest) = input
        .get(..8)
        .filter(|p| p.eq_ignore_ascii_case("https://"))
        .map(|_| &input[8..])
    else {
        return Err(bad("it must start with https://"));
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("it must not carry a user name or password"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    let url = url::Url::parse(input).map_err(|e| bad(&format!("it is not a valid URL ({e})")))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it must be an https:// URL with a host"));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert_eq!(
            check_privacy_url("https://Example.com/privacy?lang=en").unwrap(),
            "https://example.com/privacy?lang=en"
        );
        assert_eq!(
            check_privacy_url("HTTPS://intranet:8443").unwrap(),
            "https://intranet:8443/"
        );
        assert!(check_privacy_url("https://[::1]/p").is_ok());
        for (url, why) in [
            ("http://example.com/privacy", "must start with https://"),
            ("ftp://example.com", "must start with https://"),
            ("https:example.com", "must start with https://"),
            ("example.com/privacy", "must start with https://"),
            ("garbage", "must start with https://"),
            ("", "it is empty"),
            ("https://", "it has no host"),
            ("https:///privacy", "it has no host"),
            ("https://:443/privacy", "it has no host"),
            ("https://?q", "it has no host"),
            ("https://user:pw@example.com/", "user name or password"),
            ("https://exa mple.com/", "spaces or control characters"),
            ("https://example.com/\n", "spaces or control characters"),
            ("https://exa<mple.com/", "not a valid URL"),
            ("https://999.1.1.1/", "not a valid URL"),
        ] {
            let e = check_privacy_url(url).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{url:?}")),
                "{url:?}: {e}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(
            check_privacy_url(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
    }

    #[test]
    fn drafts_are_checked_field_by_field() {
        let ok = TermsDraft {
            title: "Acceptable use".into(),
            body: "Line one.\n\tLine two.\r\n".into(),
            acceptance_statement: "I accept.".into(),
            ..Default::default()
        };
        check_draft(&ok).unwrap();
        let cases: Vec<(TermsDraft, &str)> = vec![
            (
                TermsDraft {
                    title: "  ".into(),
                    ..ok.clone()
                },
                "terms title: must not be empty",
            ),
            (
                TermsDraft {
                    body: String::new(),
                    ..ok.clone()
                },
                "terms body: must not be empty",
            ),
            (
                TermsDraft {
                    acceptance_statement: "\n".into(),
                    ..ok.clone()
                },
                "terms acceptance statement: must not be empty",
            ),
            (
                TermsDraft {
                    title: "two\nlines".into(),
                    ..ok.clone()
                },
                "terms title: holds the control character '\\n' (it must be one line)",
            ),
            (
                TermsDraft {
                    body: "a\u{0}b".into(),
                    ..ok.clone()
                },
                "terms body: holds the control character '\\0'",
            ),
            (
                TermsDraft {
                    body: "x".repeat(MAX_BODY + 1),
                    ..ok.clone()
                },
                "terms body: is 131073 bytes long; at most 131072 are allowed",
            ),
            (
                TermsDraft {
                    display_name: Some("x".repeat(MAX_TITLE + 1)),
                    ..ok.clone()
                },
                "terms display name: is 257 bytes long",
            ),
        ];
        for (d, want) in cases {
            let e = check_draft(&d).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
