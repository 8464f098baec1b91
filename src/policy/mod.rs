//! Policy: the definitions administrators write ([`definition`]: configuration items and
//! baselines in TOML), their import into the site database with revision history, the terms and
//! conditions and privacy statement URL ([`terms`]), and the versioned [`PolicySnapshot`] the
//! site builds from the database and pushes to its relays.
//!
//! A revision's content is fixed once imported: importing the same id and revision again with
//! identical content is a no-op, with other content it is refused (bump the revision). Content
//! means the canonical definition (ids, names, settings, evaluators, rules, members), not the
//! file's layout or comments. Every import that adds anything raises the policy version in the
//! same transaction, so the site pushes the new snapshot.

pub mod collection;
pub mod definition;
pub mod terms;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::proto::{self, PolicySnapshot};
use crate::store::{
    BaselineRecord, DefinitionRecord, ImportIssue, ImportRequest, MemberRecord, PolicyContents,
    Store, StoreError,
};
use definition::{BaselineDefinition, CiDefinition, FileError, Located, parse_file};

/// Site setting: how often agents evaluate, in seconds.
pub const SETTING_EVALUATION_INTERVAL: &str = "evaluation_interval_s";
/// Site setting: the privacy statement URL agents show.
pub const SETTING_PRIVACY_URL: &str = "privacy_statement_url";

/// Why definitions could not be imported or a snapshot built.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A definition file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The definitions hold errors (one line each); nothing was imported.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FileError>),
    /// The site database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A definition stored in the database does not decode.
    #[error("stored definition of {what} does not decode: {why}")]
    Corrupt { what: String, why: String },
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// `(kind, id, revision)` stored now.
    pub added: Vec<(&'static str, String, u32)>,
    /// Already stored with the same content.
    pub unchanged: Vec<(&'static str, String, u32)>,
    pub policy_version: u64,
}

/// Reads, checks and imports definition files in one transaction: all of them or nothing.
pub async fn import_files(store: &Store, paths: &[PathBuf]) -> Result<ImportSummary, PolicyError> {
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
            path: p.clone(),
            source,
        })?;
        files.push((p.display().to_string(), text));
    }
    import_texts(store, &files).await
}

/// Checks and imports definitions given as `(file name, text)`.
pub async fn import_texts(
    store: &Store,
    files: &[(String, String)],
) -> Result<ImportSummary, PolicyError> {
    let mut errors = Vec::new();
    let mut cis: Vec<Located<CiDefinition>> = Vec::new();
    let mut baselines: Vec<Located<BaselineDefinition>> = Vec::new();
    for (name, text) in files {
        match parse_file(name, text) {
            Ok(f) => {
                cis.extend(f.cis);
                baselines.extend(f.baselines);
            }
            Err(e) => errors.extend(e),
        }
    }
    let cis = dedupe(
        cis,
        "configuration_item",
        |d| (&d.id, d.revision),
        &mut errors,
    );
    let baselines = dedupe(baselines, "baseline", |d| (&d.id, d.revision), &mut errors);
    if !errors.is_empty() {
        return Err(PolicyError::Invalid(errors));
    }
    let req = ImportRequest {
        cis: cis
            .iter()
            .map(|c| {
                record(
                    &c.value,
                    &c.value.id,
                    c.value.revision,
                    &c.value.name,
                    &c.value.description,
                    &c.file,
                )
            })
            .collect(),
        baselines: baselines
            .iter()
            .map(|b| BaselineRecord {
                def: record(
                    &b.value,
                    &b.value.id,
                    b.value.revision,
                    &b.value.name,
                    &b.value.description,
                    &b.file,
                ),
                members: b
                    .value
                    .members
                    .iter()
                    .map(|m| MemberRecord {
                        ci_id: m.configuration_item.clone(),
                        ci_revision: m.revision,
                        membership: m.membership.clone(),
                        remediate: m.remediate,
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut req = req;
    req.baselines
        .extend(following_baselines(store, &req).await?);
    let result = store.import_definitions(&req).await?;
    if !result.issues.is_empty() {
        let errors = result
            .issues
            .iter()
            .map(|issue| match issue {
                ImportIssue::CiChanged {
                    index,
                    stored_source,
                } => changed(&cis[*index], "configuration_item", &cis[*index].value.id, cis[*index].value.revision, stored_source),
                ImportIssue::BaselineChanged { index, stored_source } if *index >= baselines.len() => {
                    following_refused(&req.baselines[*index].def, stored_source)
                }
                ImportIssue::MissingCi { baseline, .. } if *baseline >= baselines.len() => {
                    following_refused(&req.baselines[*baseline].def, "a member that is gone")
                }
                ImportIssue::BaselineChanged {
                    index,
                    stored_source,
                } => changed(&baselines[*index], "baseline", &baselines[*index].value.id, baselines[*index].value.revision, stored_source),
                ImportIssue::MissingCi { baseline, member } => {
                    let b = &baselines[*baseline];
                    let m = &b.value.members[*member];
                    let which = match m.revision {
                        Some(r) => format!("revision {r} of configuration item {:?}", m.configuration_item),
                        None => format!("configuration item {:?}", m.configuration_item),
                    };
                    FileError {
                        file: b.file.clone(),
                        line: b.member_lines.get(*member).copied().unwrap_or(b.line),
                        column: 1,
                        field: format!("baseline {:?} member {:?}", b.value.id, m.configuration_item),
                        message: format!("{which} is neither stored at the site nor in the files imported; import it first or with this baseline"),
                    }
                }
            })
            .collect();
        return Err(PolicyError::Invalid(errors));
    }
    Ok(ImportSummary {
        added: result.added,
        unchanged: result.unchanged,
        policy_version: result.policy_version,
    })
}

/// New revisions of the stored baselines that follow the latest revision of a configuration
/// item this import adds a newer revision of: the baseline's content changes with the item, so
/// its revision moves too (the same members, still following the latest), and reports name the
/// revision they were evaluated against. A baseline the import itself brings at a higher
/// revision is left to that one.
async fn following_baselines(
    store: &Store,
    req: &ImportRequest,
) -> Result<Vec<BaselineRecord>, PolicyError> {
    let contents = store.policy_contents().await?;
    let mut out = Vec::new();
    for b in &contents.baselines {
        let superseded = req
            .baselines
            .iter()
            .any(|n| n.def.id == b.def.id && n.def.revision > b.def.revision);
        if superseded {
            continue;
        }
        let moved = b.members.iter().find_map(|(m, resolved)| {
            let current = resolved.as_ref().map_or(0, |r| r.revision);
            let newest = req
                .cis
                .iter()
                .filter(|c| m.ci_revision.is_none() && c.id == m.ci_id && c.revision > current)
                .map(|c| c.revision)
                .max()?;
            Some((m.ci_id.clone(), newest))
        });
        let Some((ci, ci_revision)) = moved else {
            continue;
        };
        let mut def: BaselineDefinition =
            serde_json::from_str(&b.def.json).map_err(|e| PolicyError::Corrupt {
                what: format!("baseline {} revision {}", b.def.id, b.def.revision),
                why: e.to_string(),
            })?;
        def.revision = b.def.revision + 1;
        out.push(BaselineRecord {
            def: record(
                &def,
                &def.id,
                def.revision,
                &def.name,
                &def.description,
                &format!("the site, following configuration item {ci} revision {ci_revision}"),
            ),
            members: b.members.iter().map(|(m, _)| m.clone()).collect(),
        });
    }
    Ok(out)
}

/// A following revision the store refused (another site server made it meanwhile).
fn following_refused(def: &DefinitionRecord, stored_source: &str) -> FileError {
    FileError {
        file: String::new(),
        line: 0,
        column: 1,
        field: format!("baseline {:?} revision {}", def.id, def.revision),
        message: format!(
            "the new revision that follows its configuration items could not be stored \
             ({stored_source}); import again"
        ),
    }
}

fn changed<T>(
    at: &Located<T>,
    kind: &str,
    id: &str,
    revision: u32,
    stored_source: &str,
) -> FileError {
    FileError {
        file: at.file.clone(),
        line: at.line,
        column: 1,
        field: format!("{kind} {id:?} revision {revision}"),
        message: format!(
            "is already stored with other content (imported from {stored_source}); a changed \
             definition needs a higher revision"
        ),
    }
}

/// Drops exact repeats of the same id and revision across files; a repeat with other content is
/// an error at the second place.
fn dedupe<T: PartialEq>(
    items: Vec<Located<T>>,
    kind: &str,
    key: impl Fn(&T) -> (&String, u32),
    errors: &mut Vec<FileError>,
) -> Vec<Located<T>> {
    let mut out: Vec<Located<T>> = Vec::with_capacity(items.len());
    let mut index: HashMap<(String, u32), usize> = HashMap::new();
    for item in items {
        let (id, rev) = key(&item.value);
        let k = (id.clone(), rev);
        match index.get(&k) {
            Some(&i) if out[i].value == item.value => {}
            Some(&i) => errors.push(FileError {
                file: item.file.clone(),
                line: item.line,
                column: 1,
                field: format!("{kind} {id:?} revision {rev}"),
                message: format!(
                    "is also defined in {} line {} with other content",
                    out[i].file, out[i].line
                ),
            }),
            None => {
                index.insert(k, out.len());
                out.push(item);
            }
        }
    }
    out
}

pub(crate) fn record<T: serde::Serialize>(
    def: &T,
    id: &str,
    revision: u32,
    name: &str,
    description: &str,
    file: &str,
) -> DefinitionRecord {
    // JSON of plain structs of strings, numbers and string-keyed maps cannot fail to serialize.
    let json = serde_json::to_string(def).expect("definitions serialize to JSON");
    // The TOML copy is for people reading the database; the JSON is what counts.
    let toml = toml::to_string(def).unwrap_or_default();
    let content_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()));
    DefinitionRecord {
        id: id.into(),
        revision,
        name: name.into(),
        description: description.into(),
        json,
        toml,
        content_hash,
        source_file: Path::new(file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.to_string()),
    }
}

/// Reads the policy's contents and the current terms and builds the snapshot the site pushes.
///
/// They are read one after the other; when the policy version moved in between (a change was
/// committed meanwhile), they are read again, so the snapshot's version names exactly what it
/// carries. After a few busy rounds the last read is used: the terms were read after the
/// version, so they are never older than it, and the next version is built soon anyway.
pub async fn snapshot(store: &Store, now_ms: i64) -> Result<PolicySnapshot, PolicyError> {
    let mut attempts = 0;
    loop {
        let contents = store.policy_contents().await?;
        let current_terms = store.current_terms().await?;
        let mut snap = build_snapshot(&contents, now_ms)?;
        collection::add_targeting(store, &mut snap).await?;
        attempts += 1;
        if attempts >= 3 || store.policy_version().await? == contents.version {
            snap.terms = current_terms.as_ref().map(terms::to_proto);
            snap.terms_accepted = store
                .user_terms_versions()
                .await?
                .into_iter()
                .map(|(user, version)| proto::UserTermsVersion { user, version })
                .collect();
            return Ok(snap);
        }
    }
}

/// Builds the snapshot the site pushes from what the database holds (without the terms, which
/// [`snapshot`] adds).
pub fn build_snapshot(c: &PolicyContents, now_ms: i64) -> Result<PolicySnapshot, PolicyError> {
    let corrupt = |what: String, e: serde_json::Error| PolicyError::Corrupt {
        what,
        why: e.to_string(),
    };
    let mut baselines = Vec::with_capacity(c.baselines.len());
    for b in &c.baselines {
        let def: BaselineDefinition = serde_json::from_str(&b.def.json).map_err(|e| {
            corrupt(
                format!("baseline {} revision {}", b.def.id, b.def.revision),
                e,
            )
        })?;
        let mut members = Vec::with_capacity(b.members.len());
        for (m, ci) in &b.members {
            let Some(ci) = ci else {
                tracing::warn!(baseline = %def.id, item = %m.ci_id, "baseline member not stored; left out of the policy");
                continue;
            };
            let ci_def: CiDefinition = serde_json::from_str(&ci.json).map_err(|e| {
                corrupt(
                    format!("configuration item {} revision {}", ci.id, ci.revision),
                    e,
                )
            })?;
            let membership = match m.membership.as_str() {
                "optional" => proto::Membership::Optional,
                "prohibited" => proto::Membership::Prohibited,
                _ => proto::Membership::Required,
            };
            members.push(proto::BaselineMember {
                configuration_item: Some(ci_def.to_proto()),
                membership: membership as i32,
                remediate: m.remediate,
            });
        }
        baselines.push(proto::Baseline {
            id: def.id,
            revision: def.revision,
            name: def.name,
            description: def.description,
            members,
            deployment: None,
        });
    }
    let number = |k: &str| {
        c.settings
            .get(k)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    Ok(PolicySnapshot {
        version: c.version,
        generated_unix_ms: now_ms,
        baselines,
        terms: None,
        privacy_statement_url: c
            .settings
            .get(SETTING_PRIVACY_URL)
            .cloned()
            .unwrap_or_default(),
        blocked_device_ids: c.blocked_device_ids.clone(),
        evaluation_interval_s: number(SETTING_EVALUATION_INTERVAL),
        retention_days: c.retention_days,
        terms_accepted: Vec::new(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CI: &str = r#"
[[configuration_item]]
id = "kernel"
revision = 1
name = "Kernel"
[[configuration_item.setting]]
id = "aslr"
evaluator = { kind = "sysctl", key = "kernel.randomize_va_space" }
rule = { operator = "equals", value = 2 }
"#;
    const BASELINE: &str = r#"
[[baseline]]
id = "k"
revision = 1
name = "K"
[[baseline.member]]
configuration_item = "kernel"
"#;

    async fn store(dir: &Path) -> Store {
        Store::connect(&format!("sqlite://{}", dir.join("site.db").display()))
            .await
            .unwrap()
    }

    fn files(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn import_is_idempotent_and_refuses_silent_edits() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let r = import_texts(&s, &files(&[("ci.toml", CI), ("b.toml", BASELINE)]))
            .await
            .unwrap();
        assert_eq!(r.added.len(), 2);
        let v1 = r.policy_version;
        assert!(v1 > 0);

        // The same content again, with other comments and layout: nothing changes.
        let again = format!(
            "# reformatted\n{}",
            CI.replace("name = \"Kernel\"", "name   =   \"Kernel\"")
        );
        let r = import_texts(&s, &files(&[("ci2.toml", &again)]))
            .await
            .unwrap();
        assert!(r.added.is_empty());
        assert_eq!(
            r.unchanged,
            vec![("configuration_item", "kernel".to_string(), 1)]
        );
        assert_eq!(r.policy_version, v1);

        // Other content under the same revision is refused, and nothing is written.
        let edited = CI.replace("value = 2", "value = 1");
        let e = import_texts(&s, &files(&[("ci.toml", &edited)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ci.toml line 2: configuration_item \"kernel\" revision 1: is already stored with other content (imported from ci.toml)"),
            "{e}"
        );
        assert_eq!(s.policy_version().await.unwrap(), v1);

        // With the revision bumped it goes in, and the policy version rises.
        let bumped = edited.replace("revision = 1", "revision = 2");
        let r = import_texts(&s, &files(&[("ci.toml", &bumped)]))
            .await
            .unwrap();
        assert!(r.policy_version > v1);
        let contents = s.policy_contents().await.unwrap();
        let snap = build_snapshot(&contents, 5).unwrap();
        assert_eq!(snap.version, r.policy_version);
        let ci = snap.baselines[0].members[0]
            .configuration_item
            .as_ref()
            .unwrap();
        assert_eq!(
            ci.revision, 2,
            "a member without a pinned revision follows the latest"
        );
        // The baseline's content changed with it, so its revision moved too.
        assert_eq!(snap.baselines[0].revision, 2);
        assert!(
            r.added.contains(&("baseline", "k".to_string(), 2)),
            "{:?}",
            r.added
        );
        assert_eq!(ci.settings[0].rule.as_ref().unwrap().expected, "1");
        let defs = s.definitions().await.unwrap();
        assert_eq!(
            defs.iter()
                .map(|d| (d.id.as_str(), d.revision))
                .collect::<Vec<_>>(),
            vec![("k", 1), ("k", 2), ("kernel", 1), ("kernel", 2)]
        );
        let b2 = defs
            .iter()
            .find(|d| d.id == "k" && d.revision == 2)
            .unwrap();
        assert_eq!(
            b2.source_file,
            "the site, following configuration item kernel revision 2"
        );
        // Importing the item again changes nothing more.
        let r = import_texts(&s, &files(&[("ci.toml", &bumped)]))
            .await
            .unwrap();
        assert!(r.added.is_empty(), "{:?}", r.added);
    }

    #[test]
    fn the_example_baselines_are_valid() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/baselines"));
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            let f = parse_file(&p.display().to_string(), &text).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
            n += f.baselines.len();
        }
        assert!(n >= 2);
    }

    #[tokio::test]
    async fn a_member_must_exist_and_conflicts_across_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let e = import_texts(&s, &files(&[("b.toml", BASELINE)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.toml line 7: baseline \"k\" member \"kernel\": configuration item \"kernel\" is neither stored"),
            "{e}"
        );
        let pinned = BASELINE.replace("\"kernel\"\n", "\"kernel\"\nrevision = 3\n");
        let e = import_texts(&s, &files(&[("ci.toml", CI), ("b.toml", &pinned)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("revision 3 of configuration item \"kernel\""),
            "{e}"
        );
        assert!(
            s.definitions().await.unwrap().is_empty(),
            "nothing was imported"
        );

        let other = CI.replace("value = 2", "value = 0");
        let e = import_texts(&s, &files(&[("a.toml", CI), ("c.toml", &other)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml line 2") && e.contains("also defined in a.toml line 2"),
            "{e}"
        );
    }
}
