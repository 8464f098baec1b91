//! Collections: sets of devices, by rules over what is known of a device (hostname glob, OS,
//! agent version, key epoch, the relay it was last seen through, enrollment time, tags), by
//! other collections they include, and by explicit include and exclude lists of device ids.
//! Written by administrators as TOML files, kept with revisions like baselines.
//!
//! A device is a member of a collection when it is not on its exclude list and any of these
//! holds: the collection is `all` (the built-in `all-devices`), the collection has rules and
//! the device satisfies every one, the device is on its include list, or the device is a
//! member of a collection it includes. Inclusion may not form a cycle.
//!
//! The same rules are evaluated at the site over every device it knows ([`Membership`]) and on
//! a relay for a device the site does not know yet ([`Targeting`]), from the same code.
//!
//! ```toml
//! [[collection]]
//! id = "paris-linux"
//! revision = 1
//! name = "Linux servers in Paris"
//! include_collections = ["web"]
//! include_devices = []
//! exclude_devices = ["0123456789abcdef0123456789abcdef"]
//! [collection.rules]
//! hostname = "par-*"
//! os = "linux*"
//! tags = { dc = "par" }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::PolicyError;
use super::definition::{FileError, Lines, Located};
use crate::compliance::report::is_definition_id;
use crate::proto;
pub use crate::store::DeviceFacts;
use crate::store::{CollectionImport, DefinitionRecord, ImportRefusal, Store};

/// The built-in collection every device belongs to.
pub const ALL_DEVICES: &str = "all-devices";

/// A collection as imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionDefinition {
    pub id: String,
    pub revision: u32,
    pub name: String,
    pub description: String,
    /// Every device (the built-in collection).
    #[serde(default)]
    pub all: bool,
    pub rules: Rules,
    pub include_collections: Vec<String>,
    pub include_devices: Vec<String>,
    pub exclude_devices: Vec<String>,
}

/// Membership rules: every rule given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Glob (`*`, `?`) over the hostname, ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Glob over the OS, ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Glob over the agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_epoch: Option<u32>,
    /// The relay the device was last seen through (its relay id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_relay: Option<String>,
    /// Enrolled at or after, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_after_ms: Option<i64>,
    /// Enrolled before, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_before_ms: Option<i64>,
    /// Tags the device must carry with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// What is known of one device, for the rules.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub device_id: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub agent_version: &'a str,
    pub key_epoch: u32,
    pub last_relay: &'a str,
    /// `None` while the enrollment is not known.
    pub enrolled_ms: Option<i64>,
    pub tags: Option<&'a BTreeMap<String, String>>,
}

impl Rules {
    /// Whether any rule is given.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// Whether the device satisfies every rule (false when there is none).
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        if self.is_empty() {
            return false;
        }
        let glob_ok =
            |g: &Option<String>, v: &str, fold: bool| g.as_deref().is_none_or(|g| glob(g, v, fold));
        glob_ok(&self.hostname, f.hostname, true)
            && glob_ok(&self.os, f.os, true)
            && glob_ok(&self.agent_version, f.agent_version, false)
            && self.key_epoch.is_none_or(|e| e == f.key_epoch)
            && self.last_relay.as_deref().is_none_or(|r| r == f.last_relay)
            && self
                .enrolled_after_ms
                .is_none_or(|t| f.enrolled_ms.is_some_and(|e| e >= t))
            && self
                .enrolled_before_ms
                .is_none_or(|t| f.enrolled_ms.is_some_and(|e| e < t))
            && self
                .tags
                .iter()
                .all(|(k, v)| f.tags.and_then(|t| t.get(k)).is_some_and(|have| have == v))
    }
}

/// `*` any run of bytes, `?` any one byte, everything else itself (ignoring ASCII case when
/// `fold`). Hostnames are ASCII; it allocates nothing, as it runs for every device and rule.
pub fn glob(pattern: &str, text: &str, fold: bool) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let same = |a: u8, b: u8| a == b || (fold && a.eq_ignore_ascii_case(&b));
    // Greedy with backtracking to the last star: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && same(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

// ---------------------------------------------------------------------------------------------
// The TOML files.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    collection: Vec<Spanned<CollectionToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionToml {
    id: Spanned<String>,
    revision: Spanned<i64>,
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    rules: Option<Spanned<RulesToml>>,
    #[serde(default)]
    include_collections: Vec<Spanned<String>>,
    #[serde(default)]
    include_devices: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_devices: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesToml {
    hostname: Option<String>,
    os: Option<String>,
    agent_version: Option<String>,
    key_epoch: Option<u32>,
    last_relay: Option<String>,
    enrolled_after: Option<Spanned<String>>,
    enrolled_before: Option<Spanned<String>>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// Parses and checks one collection file; every error found, each naming file, line and field.
pub fn parse_collections(
    file: &str,
    text: &str,
) -> Result<Vec<Located<CollectionDefinition>>, Vec<FileError>> {
    let lines = Lines::new(file, text);
    let doc: FileToml = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        vec![lines.error(e.span().unwrap_or(0..0), "", message)]
    })?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in &doc.collection {
        let line = lines.line_col(c.span().start).0;
        let t = c.get_ref();
        let id = t.id.get_ref().clone();
        let what = format!("collection {id:?}");
        let mut ok = true;
        let mut fail = |span: std::ops::Range<usize>, field: String, msg: String| {
            errors.push(lines.error(span, field, msg));
            ok = false;
        };
        if !is_definition_id(&id) {
            fail(
                t.id.span(),
                format!("{what}.id"),
                "must be 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
                    .into(),
            );
        }
        if id == ALL_DEVICES {
            fail(
                t.id.span(),
                format!("{what}.id"),
                "all-devices is built in and cannot be redefined".into(),
            );
        }
        let revision = *t.revision.get_ref();
        if !(1..=i64::from(u32::MAX)).contains(&revision) {
            fail(
                t.revision.span(),
                format!("{what}.revision"),
                "must be a whole number from 1".into(),
            );
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            fail(
                t.id.span(),
                what.clone(),
                format!("is defined twice in this file (first on line {first})"),
            );
        }
        for d in t.include_devices.iter().chain(&t.exclude_devices) {
            if !is_device_id(d.get_ref()) {
                fail(
                    d.span(),
                    format!("{what} device list"),
                    format!(
                        "{:?} is not a device id (32 lowercase hex digits)",
                        d.get_ref()
                    ),
                );
            }
        }
        for i in &t.include_collections {
            if *i.get_ref() == id {
                fail(
                    i.span(),
                    format!("{what}.include_collections"),
                    "a collection cannot include itself".into(),
                );
            }
        }
        let mut rules = Rules::default();
        if let Some(r) = &t.rules {
            let r = r.get_ref();
            let mut time = |v: &Option<Spanned<String>>, field: &str| -> Option<i64> {
                let v = v.as_ref()?;
                match v.get_ref().parse::<jiff::Timestamp>() {
                    Ok(ts) => Some(ts.as_millisecond()),
                    Err(_) => {
                        fail(
                            v.span(),
                            format!("{what}.rules.{field}"),
                            format!("{:?} is not a time like 2026-01-31T00:00:00Z", v.get_ref()),
                        );
                        None
                    }
                }
            };
            rules = Rules {
                enrolled_after_ms: time(&r.enrolled_after, "enrolled_after"),
                enrolled_before_ms: time(&r.enrolled_before, "enrolled_before"),
                hostname: r.hostname.clone(),
                os: r.os.clone(),
                agent_version: r.agent_version.clone(),
                key_epoch: r.key_epoch,
                last_relay: r.last_relay.clone(),
                tags: r.tags.clone(),
            };
        }
        if !ok {
            continue;
        }
        let sorted = |v: &[Spanned<String>]| -> Vec<String> {
            let s: BTreeSet<String> = v.iter().map(|x| x.get_ref().clone()).collect();
            s.into_iter().collect()
        };
        out.push(Located {
            value: CollectionDefinition {
                id: id.clone(),
                revision: revision as u32,
                name: t.name.get_ref().clone(),
                description: t.description.clone().unwrap_or_default(),
                all: false,
                rules,
                include_collections: sorted(&t.include_collections),
                include_devices: sorted(&t.include_devices),
                exclude_devices: sorted(&t.exclude_devices),
            },
            file: file.into(),
            line,
            member_lines: t
                .include_collections
                .iter()
                .map(|i| lines.line_col(i.span().start).0)
                .collect(),
        });
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(lines.error(0..0, "", "defines nothing: expected [[collection]] tables"));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A device id as the site stores it: 32 lowercase hex digits.
pub fn is_device_id(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The collections in an order where each comes after those it includes; `Err` names a cycle
/// (`a -> b -> a`) or an included collection that does not exist.
pub fn include_order(defs: &BTreeMap<String, CollectionDefinition>) -> Result<Vec<String>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut order = Vec::with_capacity(defs.len());
    for start in defs.keys() {
        // Iterative depth-first search: (collection, next include to visit).
        let mut stack: Vec<(&str, usize)> = vec![];
        if marks.contains_key(start.as_str()) {
            continue;
        }
        marks.insert(start, Mark::Visiting);
        stack.push((start, 0));
        while let Some((id, next)) = stack.last().copied() {
            let incl = &defs[id].include_collections;
            if next == incl.len() {
                marks.insert(id, Mark::Done);
                order.push(id.to_string());
                stack.pop();
                continue;
            }
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let child = incl[next].as_str();
            if !defs.contains_key(child) {
                return Err(format!(
                    "collection {id:?} includes unknown collection {child:?}"
                ));
            }
            match marks.get(child) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    let from = stack.iter().position(|(s, _)| *s == child).unwrap_or(0);
                    let mut path: Vec<&str> = stack[from..].iter().map(|(s, _)| *s).collect();
                    path.push(child);
                    return Err(format!(
                        "collections include each other: {}",
                        path.join(" -> ")
                    ));
                }
                None => {
                    marks.insert(child, Mark::Visiting);
                    stack.push((child, 0));
                }
            }
        }
    }
    Ok(order)
}

// ---------------------------------------------------------------------------------------------
// Membership at the site.

impl DeviceFacts {
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            device_id: &self.device_id,
            hostname: &self.hostname,
            os: &self.os,
            agent_version: &self.agent_version,
            key_epoch: self.key_epoch,
            last_relay: &self.last_relay,
            enrolled_ms: self.enrolled_ms,
            tags: Some(&self.tags),
        }
    }
}

/// Every collection's members among a list of devices, as one bit set per collection.
#[derive(Debug, Clone)]
pub struct Membership {
    words: usize,
    sets: HashMap<String, Vec<u64>>,
}

impl Membership {
    /// Evaluates every collection over `devices` (whose order the member indexes refer to).
    pub fn compute(
        defs: &BTreeMap<String, CollectionDefinition>,
        devices: &[DeviceFacts],
    ) -> Result<Self, String> {
        let order = include_order(defs)?;
        let words = devices.len().div_ceil(64);
        let index: HashMap<&str, usize> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.device_id.as_str(), i))
            .collect();
        let mut sets: HashMap<String, Vec<u64>> = HashMap::with_capacity(defs.len());
        for id in order {
            let d = &defs[&id];
            let mut bits = vec![0u64; words];
            let set = |bits: &mut Vec<u64>, i: usize| bits[i / 64] |= 1 << (i % 64);
            if d.all {
                for i in 0..devices.len() {
                    set(&mut bits, i);
                }
            } else if !d.rules.is_empty() {
                for (i, dev) in devices.iter().enumerate() {
                    if d.rules.matches(&dev.facts()) {
                        set(&mut bits, i);
                    }
                }
            }
            for inc in &d.include_collections {
                if let Some(other) = sets.get(inc) {
                    for (w, o) in bits.iter_mut().zip(other) {
                        *w |= o;
                    }
                }
            }
            for dev in &d.include_devices {
                if let Some(i) = index.get(dev.as_str()) {
                    set(&mut bits, *i);
                }
            }
            for dev in &d.exclude_devices {
                if let Some(i) = index.get(dev.as_str()) {
                    bits[i / 64] &= !(1 << (i % 64));
                }
            }
            sets.insert(id, bits);
        }
        Ok(Self { words, sets })
    }

    /// Whether device number `i` is a member of `collection`.
    pub fn contains(&self, collection: &str, i: usize) -> bool {
        self.sets
            .get(collection)
            .is_some_and(|b| b.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
    }

    /// The indexes of `collection`'s members, ascending.
    pub fn members(&self, collection: &str) -> Vec<usize> {
        let Some(bits) = self.sets.get(collection) else {
            return vec![];
        };
        let mut out = Vec::new();
        for (w, word) in bits.iter().enumerate().take(self.words) {
            let mut x = *word;
            while x != 0 {
                out.push(w * 64 + x.trailing_zeros() as usize);
                x &= x - 1;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Targeting in the policy snapshot.

/// A deployment as the snapshot builder sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentTarget {
    pub baseline_id: String,
    pub collection_id: String,
    pub remediate: bool,
    pub interval_s: u32,
}

/// Fills the snapshot's targeting: the enabled deployments, the known devices grouped by the
/// deployments that reach them, and the rules of every collection a deployment needs.
pub fn fill_targeting(
    snap: &mut proto::PolicySnapshot,
    defs: &BTreeMap<String, CollectionDefinition>,
    deployments: &[DeploymentTarget],
    devices: &[DeviceFacts],
    membership: &Membership,
) {
    snap.targeted = true;
    snap.deployments = deployments
        .iter()
        .map(|d| proto::Deployment {
            baseline_id: d.baseline_id.clone(),
            collection_id: d.collection_id.clone(),
            remediate: d.remediate,
            interval_s: d.interval_s,
        })
        .collect();
    // Devices grouped by their deployment set: a few hundred distinct sets for 100,000 devices.
    let mut groups: BTreeMap<Vec<u32>, Vec<[u8; 16]>> = BTreeMap::new();
    for (i, dev) in devices.iter().enumerate() {
        let set: Vec<u32> = deployments
            .iter()
            .enumerate()
            .filter(|(_, d)| membership.contains(&d.collection_id, i))
            .map(|(n, _)| n as u32)
            .collect();
        let mut raw = [0u8; 16];
        if hex::decode_to_slice(&dev.device_id, &mut raw).is_ok() {
            groups.entry(set).or_default().push(raw);
        }
    }
    snap.deployment_sets = groups
        .into_iter()
        .map(|(deployments, mut ids)| {
            ids.sort_unstable();
            proto::DeploymentSet {
                deployments,
                device_ids: ids.concat(),
            }
        })
        .collect();
    // The collections deployments name and, transitively, what they include.
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = deployments
        .iter()
        .map(|d| d.collection_id.as_str())
        .collect();
    while let Some(id) = todo.pop() {
        if needed.insert(id)
            && let Some(d) = defs.get(id)
        {
            todo.extend(d.include_collections.iter().map(String::as_str));
        }
    }
    snap.collections = needed
        .into_iter()
        .filter_map(|id| defs.get(id))
        .map(to_rules_proto)
        .collect();
}

fn to_rules_proto(d: &CollectionDefinition) -> proto::CollectionRules {
    proto::CollectionRules {
        id: d.id.clone(),
        all: d.all,
        hostname_glob: d.rules.hostname.clone().unwrap_or_default(),
        os_glob: d.rules.os.clone().unwrap_or_default(),
        agent_version_glob: d.rules.agent_version.clone().unwrap_or_default(),
        key_epoch: d.rules.key_epoch,
        last_relay: d.rules.last_relay.clone().unwrap_or_default(),
        enrolled_after_unix_ms: d.rules.enrolled_after_ms,
        enrolled_before_unix_ms: d.rules.enrolled_before_ms,
        tags: d.rules.tags.clone().into_iter().collect(),
        include_collections: d.include_collections.clone(),
        include_devices: d.include_devices.clone(),
        exclude_devices: d.exclude_devices.clone(),
    }
}

fn from_rules_proto(c: &proto::CollectionRules) -> CollectionDefinition {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    CollectionDefinition {
        id: c.id.clone(),
        revision: 0,
        name: String::new(),
        description: String::new(),
        all: c.all,
        rules: Rules {
            hostname: text(&c.hostname_glob),
            os: text(&c.os_glob),
            agent_version: text(&c.agent_version_glob),
            key_epoch: c.key_epoch,
            last_relay: text(&c.last_relay),
            enrolled_after_ms: c.enrolled_after_unix_ms,
            enrolled_before_ms: c.enrolled_before_unix_ms,
            tags: c.tags.clone().into_iter().collect(),
        },
        include_collections: c.include_collections.clone(),
        include_devices: c.include_devices.clone(),
        exclude_devices: c.exclude_devices.clone(),
    }
}

/// What a relay precomputes from a targeted snapshot to answer each device with its baselines.
#[derive(Debug, Default)]
pub struct Targeting {
    /// Device id (raw) → index into `sets`.
    known: HashMap<[u8; 16], u32>,
    sets: Vec<Vec<u32>>,
    deployments: Vec<proto::Deployment>,
    collections: BTreeMap<String, CollectionDefinition>,
    /// Baseline id → index into the snapshot's baselines.
    baselines: HashMap<String, usize>,
}

impl Targeting {
    /// `None` for a snapshot that is not targeted (every device gets it whole).
    pub fn of(snap: &proto::PolicySnapshot) -> Option<Self> {
        if !snap.targeted {
            return None;
        }
        let mut known = HashMap::new();
        let mut sets = Vec::with_capacity(snap.deployment_sets.len());
        for (n, s) in snap.deployment_sets.iter().enumerate() {
            for raw in s.device_ids.chunks_exact(16) {
                let mut id = [0u8; 16];
                id.copy_from_slice(raw);
                known.insert(id, n as u32);
            }
            sets.push(s.deployments.clone());
        }
        Some(Self {
            known,
            sets,
            deployments: snap.deployments.clone(),
            collections: snap
                .collections
                .iter()
                .map(|c| (c.id.clone(), from_rules_proto(c)))
                .collect(),
            baselines: snap
                .baselines
                .iter()
                .enumerate()
                .map(|(i, b)| (b.id.clone(), i))
                .collect(),
        })
    }

    /// The deployments that reach a device: the site's precomputed set when it knows the
    /// device, else its collections evaluated from `facts`.
    pub fn deployments_for(&self, facts: &Facts<'_>) -> Vec<&proto::Deployment> {
        let mut raw = [0u8; 16];
        let known = hex::decode_to_slice(facts.device_id, &mut raw)
            .ok()
            .and_then(|_| self.known.get(&raw));
        if let Some(set) = known {
            return self.sets[*set as usize]
                .iter()
                .filter_map(|i| self.deployments.get(*i as usize))
                .collect();
        }
        let mut memo: HashMap<&str, bool> = HashMap::new();
        self.deployments
            .iter()
            .filter(|d| self.is_member(&d.collection_id, facts, &mut memo, 0))
            .collect()
    }

    fn is_member<'s>(
        &'s self,
        id: &'s str,
        facts: &Facts<'_>,
        memo: &mut HashMap<&'s str, bool>,
        depth: usize,
    ) -> bool {
        if let Some(m) = memo.get(id) {
            return *m;
        }
        // The site refuses cycles; the depth bound keeps a hostile snapshot from recursing.
        let Some(c) = self.collections.get(id).filter(|_| depth < 64) else {
            return false;
        };
        let m = !c.exclude_devices.iter().any(|d| d == facts.device_id)
            && (c.all
                || c.rules.matches(facts)
                || c.include_devices.iter().any(|d| d == facts.device_id)
                || c.include_collections
                    .iter()
                    .any(|i| self.is_member(i, facts, memo, depth + 1)));
        memo.insert(id, m);
        m
    }

    /// The snapshot as one device gets it: only the baselines deployed to it, each with its
    /// deployment, members' remediation cleared where the deployment only reports, and no
    /// targeting fields.
    pub fn for_device(
        &self,
        snap: &proto::PolicySnapshot,
        facts: &Facts<'_>,
    ) -> proto::PolicySnapshot {
        // Per baseline: remediate if any deployment does, the shortest non-zero interval.
        let mut per: BTreeMap<usize, proto::Deployment> = BTreeMap::new();
        for d in self.deployments_for(facts) {
            let Some(&i) = self.baselines.get(&d.baseline_id) else {
                continue;
            };
            per.entry(i)
                .and_modify(|e| {
                    e.remediate |= d.remediate;
                    if d.interval_s != 0 && (e.interval_s == 0 || d.interval_s < e.interval_s) {
                        e.interval_s = d.interval_s;
                    }
                })
                .or_insert_with(|| d.clone());
        }
        let baselines = per
            .into_iter()
            .map(|(i, d)| {
                let mut b = snap.baselines[i].clone();
                if !d.remediate {
                    for m in &mut b.members {
                        m.remediate = false;
                    }
                }
                b.deployment = Some(d);
                b
            })
            .collect();
        proto::PolicySnapshot {
            version: snap.version,
            generated_unix_ms: snap.generated_unix_ms,
            baselines,
            terms: snap.terms.clone(),
            privacy_statement_url: snap.privacy_statement_url.clone(),
            blocked_device_ids: vec![],
            evaluation_interval_s: snap.evaluation_interval_s,
            retention_days: snap.retention_days,
            terms_accepted: vec![],
            targeted: false,
            deployments: vec![],
            deployment_sets: vec![],
            collections: vec![],
        }
    }
}

/// The built-in collection's definition.
pub fn all_devices() -> CollectionDefinition {
    CollectionDefinition {
        id: ALL_DEVICES.into(),
        revision: 1,
        name: "All devices".into(),
        description: "Every device the site knows.".into(),
        all: true,
        rules: Rules::default(),
        include_collections: vec![],
        include_devices: vec![],
        exclude_devices: vec![],
    }
}

/// Parses an interval like `4h`, `30m`, `1d`, `90s` or a number of seconds.
pub fn parse_interval(v: &str) -> Result<u32, String> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not an interval like 4h, 30m, 1d or 900s"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{v:?} is not an interval like 4h, 30m, 1d or 900s")),
    };
    let s = n * mult;
    if s == 0 || s > u64::from(u32::MAX) {
        return Err(format!(
            "{v:?}: the interval must be from 1 second to 136 years"
        ));
    }
    Ok(s as u32)
}

// ---------------------------------------------------------------------------------------------
// At the site: import, membership, the snapshot's targeting, compliance per deployment.

/// Reads, checks and imports collection files in one transaction: all of them or nothing.
/// Refused (nothing changed) for an error in a file, a revision stored with other content, an
/// inclusion of an unknown collection or a cycle.
pub async fn import_collection_files(
    store: &Store,
    actor: &crate::store::Actor,
    paths: &[PathBuf],
) -> Result<CollectionImport, PolicyError> {
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
            path: p.clone(),
            source,
        })?;
        files.push((p.display().to_string(), text));
    }
    import_collection_texts(store, actor, &files).await
}

/// Checks and imports collections given as `(file name, text)`.
pub async fn import_collection_texts(
    store: &Store,
    actor: &crate::store::Actor,
    files: &[(String, String)],
) -> Result<CollectionImport, PolicyError> {
    let mut errors = Vec::new();
    let mut located: Vec<Located<CollectionDefinition>> = Vec::new();
    for (file, text) in files {
        match parse_collections(file, text) {
            Ok(v) => located.extend(v),
            Err(e) => errors.extend(e),
        }
    }
    let mut first: HashMap<&str, &Located<CollectionDefinition>> = HashMap::new();
    for l in &located {
        if let Some(f) = first.insert(&l.value.id, l)
            && f.value.revision == l.value.revision
        {
            errors.push(file_error(
                l,
                format!("is also defined in {} line {}", f.file, f.line),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PolicyError::Invalid(errors));
    }
    let records: Vec<DefinitionRecord> = located
        .iter()
        .map(|l| {
            let d = &l.value;
            super::record(d, &d.id, d.revision, &d.name, &d.description, &l.file)
        })
        .collect();
    let check = |latest: &BTreeMap<String, String>| -> Result<(), String> {
        let defs = decode_all(latest).map_err(|e| e.to_string())?;
        include_order(&defs).map(|_| ())
    };
    match store.import_collections(actor, &records, check).await? {
        Ok(out) => Ok(out),
        Err(ImportRefusal::Issues(issues)) => Err(PolicyError::Invalid(
            issues
                .into_iter()
                .map(|(i, why)| file_error(&located[i], why))
                .collect(),
        )),
        Err(ImportRefusal::Check(why)) => {
            // Name the file of the first imported collection the message names.
            let at = located
                .iter()
                .find(|l| why.contains(&format!("{:?}", l.value.id)) || why.contains(&l.value.id))
                .unwrap_or(&located[0]);
            Err(PolicyError::Invalid(vec![file_error(at, why)]))
        }
    }
}

fn file_error(l: &Located<CollectionDefinition>, message: String) -> FileError {
    FileError {
        file: l.file.clone(),
        line: l.line,
        column: 1,
        field: format!("collection {:?}", l.value.id),
        message,
    }
}

fn decode_all(
    latest: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, CollectionDefinition>, PolicyError> {
    latest
        .iter()
        .map(|(id, json)| {
            serde_json::from_str(json)
                .map(|d| (id.clone(), d))
                .map_err(|e| PolicyError::Corrupt {
                    what: format!("collection {id}"),
                    why: e.to_string(),
                })
        })
        .collect()
}

/// Every collection, every device and which devices are members of which collection.
pub struct SiteMembership {
    pub collections: BTreeMap<String, CollectionDefinition>,
    pub devices: Vec<DeviceFacts>,
    pub membership: Membership,
}

impl SiteMembership {
    /// Reads the collections and devices and computes every collection's members.
    pub async fn load(store: &Store) -> Result<Self, PolicyError> {
        let collections = decode_all(&store.collection_definitions().await?)?;
        let devices = store.device_facts().await?;
        let membership =
            Membership::compute(&collections, &devices).map_err(|why| PolicyError::Corrupt {
                what: "collections".into(),
                why,
            })?;
        Ok(Self {
            collections,
            devices,
            membership,
        })
    }

    /// The members of a collection, in device order.
    pub fn members(&self, collection: &str) -> Vec<&DeviceFacts> {
        self.membership
            .members(collection)
            .into_iter()
            .map(|i| &self.devices[i])
            .collect()
    }
}

/// Adds the enabled deployments and the membership to a snapshot.
pub async fn add_targeting(
    store: &Store,
    snap: &mut proto::PolicySnapshot,
) -> Result<(), PolicyError> {
    let site = SiteMembership::load(store).await?;
    let deployments: Vec<DeploymentTarget> = store
        .deployments()
        .await?
        .into_iter()
        .filter(|d| d.enabled)
        .map(|d| DeploymentTarget {
            baseline_id: d.baseline_id,
            collection_id: d.collection_id,
            remediate: d.remediate,
            interval_s: d.interval_s,
        })
        .collect();
    fill_targeting(
        snap,
        &site.collections,
        &deployments,
        &site.devices,
        &site.membership,
    );
    Ok(())
}

/// Deploys every baseline an import added or found unchanged to `all-devices` with
/// remediation, as the demo does; returns the policy version after it.
pub async fn deploy_to_all_devices(
    store: &Store,
    actor: &crate::store::Actor,
    imported: &super::ImportSummary,
) -> Result<u64, PolicyError> {
    let ids: BTreeSet<&str> = imported
        .added
        .iter()
        .chain(&imported.unchanged)
        .filter(|(kind, _, _)| *kind == "baseline")
        .map(|(_, id, _)| id.as_str())
        .collect();
    for id in ids {
        store
            .deploy(
                actor,
                &crate::store::DeployRequest {
                    baseline_id: id.into(),
                    collection_id: ALL_DEVICES.into(),
                    remediate: true,
                    interval_s: 0,
                },
            )
            .await?;
    }
    Ok(store.policy_version().await?)
}

/// Compliance of one deployment over the devices now in its collection.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploymentCompliance {
    pub baseline_id: String,
    pub collection_id: String,
    pub remediate: bool,
    pub interval_s: u32,
    pub enabled: bool,
    pub targeted: u64,
    pub compliant: u64,
    pub non_compliant: u64,
    pub error: u64,
    /// Members with no report on the baseline yet (or only an unknown state).
    pub not_reported: u64,
}

/// Compliance per deployment, optionally only of the deployments to `collection`. A device
/// counts for a deployment while it is a member of the collection; a device that left it no
/// longer counts (its reports and history stay).
pub async fn deployment_compliance(
    store: &Store,
    collection: Option<&str>,
) -> Result<Vec<DeploymentCompliance>, PolicyError> {
    let site = SiteMembership::load(store).await?;
    let mut out = Vec::new();
    let mut states: HashMap<String, HashMap<String, String>> = HashMap::new();
    for d in store.deployments().await? {
        if collection.is_some_and(|c| c != d.collection_id) {
            continue;
        }
        if !states.contains_key(&d.baseline_id) {
            let s = store.current_states(&d.baseline_id).await?;
            states.insert(d.baseline_id.clone(), s.into_iter().collect());
        }
        let by_device = &states[&d.baseline_id];
        let mut c = DeploymentCompliance {
            baseline_id: d.baseline_id.clone(),
            collection_id: d.collection_id.clone(),
            remediate: d.remediate,
            interval_s: d.interval_s,
            enabled: d.enabled,
            targeted: 0,
            compliant: 0,
            non_compliant: 0,
            error: 0,
            not_reported: 0,
        };
        for dev in site.members(&d.collection_id) {
            c.targeted += 1;
            // Not applicable counts as compliant in summaries, as in the suite.
            match by_device.get(&dev.device_id).map(String::as_str) {
                Some("compliant") | Some("not_applicable") => c.compliant += 1,
                Some("non_compliant") => c.non_compliant += 1,
                Some("error") => c.error += 1,
                _ => c.not_reported += 1,
            }
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: u8, host: &str, tags: &[(&str, &str)]) -> DeviceFacts {
        DeviceFacts {
            device_id: format!("{id:032x}"),
            hostname: host.into(),
            os: "Linux".into(),
            agent_version: "1.2.0".into(),
            key_epoch: 1,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob("par-*", "par-web-1", false));
        assert!(glob("*-web-?", "par-web-1", false));
        assert!(!glob("par-*", "lon-web-1", false));
        assert!(glob("*", "", false));
        assert!(!glob("a?c", "ac", false));
        assert!(glob("a*b*c", "axxbyyc", false));
        assert!(glob("PAR-*", "par-1", true) && !glob("PAR-*", "par-1", false));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let text = "[[collection]]\nid = \"x\"\nrevision = 1\nname = \"X\"\n[collection.rules]\nhostnme = \"a*\"\n";
        let e = parse_collections("c.toml", text).unwrap_err();
        let s = e[0].to_string();
        assert!(s.starts_with("c.toml line 6"), "{s}");
        assert!(s.contains("hostnme"), "{s}");
        let text = "[[collection]]\nid = \"x\"\nrevision = 1\nname = \"X\"\ninclude_collections = [\"x\"]\n";
        let e = parse_collections("c.toml", text).unwrap_err();
        assert!(
            e[0].to_string().contains("cannot include itself"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn cycles_are_named_and_membership_follows_rules_includes_and_lists() {
        let mut defs = BTreeMap::new();
        let mut c = |id: &str, f: &dyn Fn(&mut CollectionDefinition)| {
            let mut d = all_devices();
            d.id = id.into();
            d.all = false;
            f(&mut d);
            defs.insert(id.to_string(), d);
        };
        c("web", &|d| {
            d.rules.tags.insert("role".into(), "web".into());
        });
        c("paris", &|d| {
            d.rules.hostname = Some("PAR-*".into());
            d.include_collections = vec!["web".into()];
            d.exclude_devices = vec![format!("{:032x}", 3)];
            d.include_devices = vec![format!("{:032x}", 4)];
        });
        defs.insert(ALL_DEVICES.into(), all_devices());
        let devices = vec![
            dev(1, "par-1", &[]),
            dev(2, "lon-1", &[("role", "web")]),
            dev(3, "par-2", &[]),
            dev(4, "lon-2", &[]),
        ];
        let m = Membership::compute(&defs, &devices).unwrap();
        assert_eq!(m.members("paris"), vec![0, 1, 3]);
        assert_eq!(m.members("web"), vec![1]);
        assert_eq!(m.members(ALL_DEVICES), vec![0, 1, 2, 3]);

        defs.get_mut("web").unwrap().include_collections = vec!["paris".into()];
        let e = Membership::compute(&defs, &devices).unwrap_err();
        assert!(e.contains("paris -> web -> paris"), "{e}");
    }

    #[test]
    fn a_relay_places_known_and_unknown_devices_as_the_site_would() {
        let mut defs = BTreeMap::new();
        let mut web = all_devices();
        web.id = "web".into();
        web.all = false;
        web.rules.tags.insert("role".into(), "web".into());
        defs.insert("web".to_string(), web);
        let deployments = vec![DeploymentTarget {
            baseline_id: "b".into(),
            collection_id: "web".into(),
            remediate: false,
            interval_s: 600,
        }];
        let devices = vec![dev(1, "a", &[("role", "web")]), dev(2, "b", &[])];
        let m = Membership::compute(&defs, &devices).unwrap();
        let mut snap = proto::PolicySnapshot {
            baselines: vec![proto::Baseline {
                id: "b".into(),
                members: vec![proto::BaselineMember {
                    remediate: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        fill_targeting(&mut snap, &defs, &deployments, &devices, &m);
        let t = Targeting::of(&snap).unwrap();
        let got = t.for_device(&snap, &devices[0].facts());
        assert_eq!(got.baselines.len(), 1);
        assert!(!got.baselines[0].members[0].remediate);
        assert_eq!(
            got.baselines[0].deployment.as_ref().unwrap().interval_s,
            600
        );
        assert!(
            t.for_device(&snap, &devices[1].facts())
                .baselines
                .is_empty()
        );
        // Unknown to the site: placed by the tags it reports.
        let new = dev(9, "c", &[("role", "web")]);
        assert_eq!(t.for_device(&snap, &new.facts()).baselines.len(), 1);
    }

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("4h"), Ok(14_400));
        assert_eq!(parse_interval("90"), Ok(90));
        assert!(parse_interval("4x").is_err());
        assert!(parse_interval("0m").is_err());
    }
}
