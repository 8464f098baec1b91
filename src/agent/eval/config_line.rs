//! `config_line`: the effective value of a key in a configuration file, as the program reading
//! the file would see it, and its remediation by rewriting that one line.
//!
//! Two dialects, chosen by `separator`:
//! - `whitespace` (the default): the sshd_config dialect. `Key value` or `Key=value`, keys are
//!   case-insensitive, the **first** occurrence wins, `Include` pulls in other files (globs in the
//!   last path component; relative paths are relative to the including file's directory) at the
//!   point where it appears, and a `Match` line starts conditional blocks that last to the end of
//!   the file: they do not set the global value, so they are skipped.
//! - a single character such as `=` or `:`: `key=value` files (sysctl.conf, /etc/default/…,
//!   login.defs-like). Keys are case-sensitive, the **last** occurrence wins, no includes or
//!   blocks. A value in double quotes is read without them.
//!
//! Parameters override the dialect: `occurrence` (`first`/`last`), `block_keyword` and
//! `include_keyword` (empty to turn off), `case_sensitive_keys`, `comment` (default `#`).
//! Remediation rewrites the value of the effective line in whichever file holds it, keeping the
//! rest of the file byte for byte; when the key is not set anywhere, it adds `Key value` to the
//! main file before its first conditional block (or at its end). The file is replaced atomically
//! with its mode and owner kept.

use std::fs;
use std::path::PathBuf;

use super::{EvalContext, Remedy, fsops};
use crate::compliance::check::check_abs_path;
use crate::compliance::check::config_line::{Occurrence, Separator, Spec};

/// How deep `Include` may nest (sshd allows 16; real configurations use one level).
const MAX_INCLUDE_DEPTH: usize = 8;

/// One global setting of the key, where it is.
#[derive(Debug, Clone)]
struct Entry {
    host: PathBuf,
    shown: String,
    line: usize,
    value_start: usize,
    value_end: usize,
    value: String,
    quoted: bool,
}

#[derive(Debug, Default)]
struct Scan {
    main_exists: bool,
    entries: Vec<Entry>,
    /// The main file's first conditional block line.
    first_block: Option<usize>,
}

impl Spec {
    /// The key's effective value; not found when the file or the key is missing.
    pub fn observe(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        let scan = self.scan(ctx)?;
        Ok(self.effective(&scan).map(|e| e.value.clone()))
    }

    /// Sets the key to `expected` where it takes effect.
    pub fn remediate(&self, ctx: &EvalContext, expected: &str) -> Result<Remedy, String> {
        let scan = self.scan(ctx)?;
        if !scan.main_exists {
            return Ok(Remedy::NotPossible(format!("{} does not exist", self.path)));
        }
        let quote = |v: &str, quoted: bool| {
            if quoted || (matches!(self.separator, Separator::Char(_)) && v.contains(' ')) {
                format!("\"{v}\"")
            } else {
                v.to_string()
            }
        };
        let (host, shown, text) = match self.effective(&scan) {
            Some(e) => {
                let text = utf8(&e.host, &e.shown)?;
                let mut out = String::with_capacity(text.len() + expected.len());
                for (i, line) in text.split_inclusive('\n').enumerate() {
                    if i == e.line {
                        out.push_str(&line[..e.value_start]);
                        out.push_str(&quote(expected, e.quoted));
                        out.push_str(&line[e.value_end..]);
                    } else {
                        out.push_str(line);
                    }
                }
                (e.host.clone(), e.shown.clone(), out)
            }
            None => {
                let host = ctx.host_path(&self.path)?;
                let text = utf8(&host, &self.path)?;
                let new_line = match self.separator {
                    Separator::Whitespace => format!("{} {}\n", self.key, expected),
                    Separator::Char(':') => format!("{}: {}\n", self.key, quote(expected, false)),
                    Separator::Char(c) => format!("{}{c}{}\n", self.key, quote(expected, false)),
                };
                let mut out = String::with_capacity(text.len() + new_line.len() + 1);
                let mut placed = false;
                for (i, line) in text.split_inclusive('\n').enumerate() {
                    if Some(i) == scan.first_block {
                        out.push_str(&new_line);
                        placed = true;
                    }
                    out.push_str(line);
                }
                if !placed {
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(&new_line);
                }
                (host, self.path.clone(), out)
            }
        };
        fsops::replace_file(&host, text.as_bytes(), &shown)?;
        Ok(Remedy::Applied)
    }

    fn effective<'a>(&self, scan: &'a Scan) -> Option<&'a Entry> {
        match self.occurrence {
            Occurrence::First => scan.entries.first(),
            Occurrence::Last => scan.entries.last(),
        }
    }

    fn scan(&self, ctx: &EvalContext) -> Result<Scan, String> {
        let mut scan = Scan::default();
        let host = ctx.host_path(&self.path)?;
        scan.main_exists = host.exists();
        if scan.main_exists {
            scan.first_block = self.scan_file(ctx, &self.path, 0, &mut scan.entries)?;
        }
        Ok(scan)
    }

    /// Adds the global entries of `shown` (and what it includes) to `out`; returns the index of
    /// its first conditional block line.
    fn scan_file(
        &self,
        ctx: &EvalContext,
        shown: &str,
        depth: usize,
        out: &mut Vec<Entry>,
    ) -> Result<Option<usize>, String> {
        let host = ctx.host_path(shown)?;
        let Some(bytes) = fsops::read_limited(&host, shown)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut first_block = None;
        for (i, line) in text.split('\n').enumerate() {
            let Some((key, vs, ve)) = self.split(line) else {
                continue;
            };
            if self.keyword_is(key, self.block_keyword.as_deref()) {
                first_block = Some(i);
                break;
            }
            if self.keyword_is(key, self.include_keyword.as_deref()) {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(format!(
                        "{shown}: includes nest deeper than {MAX_INCLUDE_DEPTH}"
                    ));
                }
                for inc in line[vs..ve].split_whitespace() {
                    for f in self.expand(ctx, shown, inc)? {
                        self.scan_file(ctx, &f, depth + 1, out)?;
                    }
                }
                continue;
            }
            if self.key_is(key, &self.key) {
                let raw = &line[vs..ve];
                let quoted = raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"');
                out.push(Entry {
                    host: host.clone(),
                    shown: shown.to_string(),
                    line: i,
                    value_start: vs,
                    value_end: ve,
                    value: if quoted { &raw[1..raw.len() - 1] } else { raw }.to_string(),
                    quoted,
                });
            }
        }
        Ok(first_block)
    }

    /// The files an include argument names, sorted as glob(3) returns them.
    fn expand(&self, ctx: &EvalContext, from: &str, arg: &str) -> Result<Vec<String>, String> {
        let arg = arg.trim_matches('"');
        let full = if arg.starts_with('/') {
            arg.to_string()
        } else {
            let dir = from.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            format!("{dir}/{arg}")
        };
        check_abs_path(&full).map_err(|e| format!("{from}: include {e}"))?;
        let (dir, pattern) = full.rsplit_once('/').unwrap_or(("", &full));
        if !pattern.contains(['*', '?']) {
            return Ok(vec![full]);
        }
        let entries = match fs::read_dir(ctx.host_path(dir)?) {
            Ok(rd) => rd,
            // sshd ignores an include that matches nothing.
            Err(_) => return Ok(vec![]),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| glob_match(pattern, n) && (!n.starts_with('.') || pattern.starts_with('.')))
            .collect();
        names.sort();
        Ok(names.into_iter().map(|n| format!("{dir}/{n}")).collect())
    }

    /// Key and value byte range of a setting line; `None` for blank, comment and bare lines.
    fn split<'l>(&self, line: &'l str) -> Option<(&'l str, usize, usize)> {
        let start = line.len() - line.trim_start().len();
        let rest = &line[start..];
        if rest.is_empty() || rest.starts_with(self.comment.as_str()) {
            return None;
        }
        let (key, mut v) = match self.separator {
            Separator::Whitespace => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '=')
                    .unwrap_or(rest.len());
                let mut v = start + end;
                v += ws_len(&line[v..]);
                if line[v..].starts_with('=') {
                    v += 1;
                }
                (&rest[..end], v)
            }
            Separator::Char(c) => {
                let pos = rest.find(c)?;
                (rest[..pos].trim_end(), start + pos + c.len_utf8())
            }
        };
        v += ws_len(&line[v..]);
        let end = line.trim_end().len().max(v);
        Some((key, v, end))
    }

    fn key_is(&self, a: &str, b: &str) -> bool {
        if self.case_sensitive {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    }

    fn keyword_is(&self, key: &str, keyword: Option<&str>) -> bool {
        keyword.is_some_and(|k| key.eq_ignore_ascii_case(k))
    }
}

fn ws_len(s: &str) -> usize {
    s.len() - s.trim_start_matches([' ', '\t']).len()
}

fn utf8(host: &std::path::Path, shown: &str) -> Result<String, String> {
    let bytes = fsops::read_limited(host, shown)?.ok_or_else(|| format!("{shown} vanished"))?;
    String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text; not changed"))
}

/// `*` and `?` wildcards, as in the last component of a glob.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::tests::setting;
    use super::super::*;
    use super::glob_match;
    use crate::compliance::State;

    const SSHD: &str = "\
# Debian-like sshd_config
Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
PermitRootLogin yes
  MaxAuthTries   6
X11Forwarding=yes
Subsystem sftp /usr/lib/openssh/sftp-server

Match User anoncvs
    PasswordAuthentication yes
    X11Forwarding no
";

    fn tree(sshd: &str, dropins: &[(&str, &str)]) -> (tempfile::TempDir, EvalContext) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/ssh/sshd_config.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), sshd).unwrap();
        for (name, text) in dropins {
            std::fs::write(d.join(name), text).unwrap();
        }
        let ctx = EvalContext::new(dir.path());
        (dir, ctx)
    }

    fn sshd(key: &str, op: &str, expected: &str) -> proto::Setting {
        let mut s = setting(
            "config_line",
            &[("path", "/etc/ssh/sshd_config"), ("key", key)],
            op,
            expected,
        );
        s.remediation_allowed = op == "equals";
        s.noncompliant_if_missing = true;
        s
    }

    fn eval(s: &proto::Setting, ctx: &EvalContext, remediate: bool) -> proto::SettingResult {
        evaluate_setting(s, Membership::Required, remediate, ctx)
    }

    fn st(r: &proto::SettingResult) -> State {
        State::from(proto::ComplianceState::try_from(r.state).unwrap())
    }

    #[test]
    fn sshd_dialect_reads_the_global_first_value() {
        let (_d, ctx) = tree(SSHD, &[]);
        let r = eval(&sshd("permitrootlogin", "equals", "no"), &ctx, false);
        assert_eq!(r.observed_before.as_deref(), Some("yes"));
        assert_eq!(st(&r), State::NonCompliant);
        let r = eval(&sshd("MaxAuthTries", "less_or_equal", "4"), &ctx, false);
        assert_eq!(r.observed_before.as_deref(), Some("6"));
        let r = eval(&sshd("X11Forwarding", "equals", "yes"), &ctx, false);
        assert_eq!(r.observed_before.as_deref(), Some("yes"));
        // Only set inside a Match block: not set globally.
        let r = eval(&sshd("PasswordAuthentication", "equals", "no"), &ctx, false);
        assert_eq!(r.observed_before, None);
        assert_eq!(st(&r), State::NonCompliant);
    }

    #[test]
    fn an_included_file_set_earlier_wins_and_is_the_one_remediated() {
        let (d, ctx) = tree(
            SSHD,
            &[
                ("50-cloud-init.conf", "PasswordAuthentication yes\n"),
                ("60-other.conf", "PasswordAuthentication no\n"),
                ("README", "PasswordAuthentication maybe\n"),
            ],
        );
        let s = sshd("PasswordAuthentication", "equals", "no");
        let r = eval(&s, &ctx, false);
        assert_eq!(r.observed_before.as_deref(), Some("yes"));
        let r = eval(&s, &ctx, true);
        assert_eq!(st(&r), State::Compliant);
        assert!(r.remediated);
        assert_eq!(r.observed_after.as_deref(), Some("no"));
        let dropin =
            std::fs::read_to_string(d.path().join("etc/ssh/sshd_config.d/50-cloud-init.conf"))
                .unwrap();
        assert_eq!(dropin, "PasswordAuthentication no\n");
        let main = std::fs::read_to_string(d.path().join("etc/ssh/sshd_config")).unwrap();
        assert_eq!(main, SSHD, "the main file is untouched");
    }

    #[test]
    fn remediation_rewrites_one_line_and_keeps_the_rest() {
        let (d, ctx) = tree(SSHD, &[]);
        let p = d.path().join("etc/ssh/sshd_config");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let r = eval(&sshd("PermitRootLogin", "equals", "no"), &ctx, true);
        assert_eq!(st(&r), State::Compliant);
        assert_eq!(
            (r.observed_before.as_deref(), r.observed_after.as_deref()),
            (Some("yes"), Some("no"))
        );
        let r = eval(&sshd("X11Forwarding", "equals", "no"), &ctx, true);
        assert!(r.remediated);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            SSHD.replace("PermitRootLogin yes", "PermitRootLogin no")
                .replace("X11Forwarding=yes", "X11Forwarding=no")
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn a_missing_key_is_added_before_the_first_match_block() {
        let (d, ctx) = tree(SSHD, &[]);
        let r = eval(&sshd("PasswordAuthentication", "equals", "no"), &ctx, true);
        assert_eq!(st(&r), State::Compliant);
        assert_eq!(r.observed_before, None);
        assert_eq!(r.observed_after.as_deref(), Some("no"));
        let text = std::fs::read_to_string(d.path().join("etc/ssh/sshd_config")).unwrap();
        assert_eq!(
            text,
            SSHD.replace(
                "Match User anoncvs",
                "PasswordAuthentication no\nMatch User anoncvs"
            )
        );
    }

    #[test]
    fn a_read_only_file_is_an_error_and_unchanged() {
        let (d, ctx) = tree(SSHD, &[]);
        let p = d.path().join("etc/ssh/sshd_config");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        let r = eval(&sshd("PermitRootLogin", "equals", "no"), &ctx, true);
        assert_eq!(st(&r), State::Error);
        assert!(
            r.error
                .contains("remediation failed: /etc/ssh/sshd_config is read-only"),
            "{}",
            r.error
        );
        assert_eq!(r.observed_before.as_deref(), Some("yes"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), SSHD);
    }

    #[test]
    fn key_value_dialect_takes_the_last_value_and_quotes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/default")).unwrap();
        let p = dir.path().join("etc/default/grub");
        std::fs::write(
            &p,
            "GRUB_TIMEOUT=5\n# GRUB_CMDLINE_LINUX=\"x\"\nGRUB_CMDLINE_LINUX=\"quiet\"\nGRUB_CMDLINE_LINUX=\"quiet audit=0\"\n",
        )
        .unwrap();
        let ctx = EvalContext::new(dir.path());
        let mut s = setting(
            "config_line",
            &[
                ("path", "/etc/default/grub"),
                ("key", "GRUB_CMDLINE_LINUX"),
                ("separator", "="),
            ],
            "equals",
            "quiet audit=1",
        );
        s.remediation_allowed = true;
        let r = eval(&s, &ctx, true);
        assert_eq!(r.observed_before.as_deref(), Some("quiet audit=0"));
        assert_eq!(r.observed_after.as_deref(), Some("quiet audit=1"));
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .ends_with("GRUB_CMDLINE_LINUX=\"quiet\"\nGRUB_CMDLINE_LINUX=\"quiet audit=1\"\n")
        );
        // Keys are case-sensitive in this dialect.
        let s = setting(
            "config_line",
            &[
                ("path", "/etc/default/grub"),
                ("key", "grub_timeout"),
                ("separator", "="),
            ],
            "equals",
            "5",
        );
        assert_eq!(eval(&s, &ctx, false).observed_before, None);
    }

    #[test]
    fn a_missing_file_is_not_found_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = EvalContext::new(dir.path());
        let r = eval(&sshd("PermitRootLogin", "equals", "no"), &ctx, true);
        assert_eq!(st(&r), State::NonCompliant);
        assert!(!r.remediated && r.observed_after.is_none());
        assert!(!dir.path().join("etc/ssh/sshd_config").exists());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "50-cloud-init.conf"));
        assert!(!glob_match("*.conf", "README"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "ac"));
    }
}
