//! File evaluators: `file_exists`, `file_mode` (with chmod remediation), `file_owner` and
//! `file_contains`.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use super::{EvalContext, Remedy, fsops};
use crate::compliance::check::file::{Contains, Target};
use crate::compliance::rule::{Operator, Rule, format_mode, parse_mode};

impl Target {
    fn metadata(&self, ctx: &EvalContext) -> Result<Option<fs::Metadata>, String> {
        match fs::metadata(ctx.host_path(&self.path)?) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot examine {}: {e}", self.path)),
        }
    }

    pub fn exists(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        Ok(self.metadata(ctx)?.map(|m| {
            if m.is_file() {
                "regular file"
            } else if m.is_dir() {
                "directory"
            } else {
                "other"
            }
            .to_string()
        }))
    }

    pub fn mode(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        Ok(self.metadata(ctx)?.map(|m| format_mode(m.mode())))
    }

    /// `user:group`, by the names the device itself gives the ids.
    pub fn owner(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        let Some(m) = self.metadata(ctx)? else {
            return Ok(None);
        };
        let user = name_of(ctx, "/etc/passwd", m.uid());
        let group = name_of(ctx, "/etc/group", m.gid());
        Ok(Some(format!("{user}:{group}")))
    }

    /// chmod to the expected mode (`equals`), or takes away the bits `mode_at_most` does not
    /// allow, keeping the rest.
    pub fn remediate_mode(
        &self,
        ctx: &EvalContext,
        rule: &Rule,
        observed: Option<&str>,
    ) -> Result<Remedy, String> {
        let Some(current) = observed.and_then(parse_mode) else {
            return Ok(Remedy::NotPossible(format!("{} does not exist", self.path)));
        };
        let target = match rule.operator {
            Operator::Equals => parse_mode(&rule.expected),
            Operator::ModeAtMost => rule.mode().map(|max| current & max),
            _ => None,
        }
        .ok_or_else(|| format!("cannot derive a mode from the rule {rule}"))?;
        let path = ctx.host_path(&self.path)?;
        // Opened without following a link, so a link put in place since the path was resolved
        // inside the root is refused rather than followed out of it.
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|f| f.set_permissions(fs::Permissions::from_mode(target)))
            .map_err(|e| format!("cannot change the mode of {}: {e}", self.path))?;
        Ok(Remedy::Applied)
    }
}

/// The name of `id` in the device's passwd or group file, or the number when it has none.
fn name_of(ctx: &EvalContext, file: &str, id: u32) -> String {
    let text = ctx
        .host_path(file)
        .and_then(|p| fs::read_to_string(p).map_err(|e| e.to_string()))
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            (f.next()?.parse::<u32>().ok()? == id).then(|| name.to_string())
        })
        .unwrap_or_else(|| id.to_string())
}

impl Contains {
    /// The first matching line (trimmed); not found when no line matches or the file is missing.
    pub fn observe(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        let Some(bytes) = fsops::read_limited(&ctx.host_path(&self.path)?, &self.path)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        Ok(text
            .lines()
            .find(|l| self.pattern.is_match(l))
            .map(|l| l.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::super::tests::setting;
    use super::super::*;
    use crate::compliance::State;

    fn state(r: &proto::SettingResult) -> State {
        State::from(proto::ComplianceState::try_from(r.state).unwrap())
    }

    fn tree() -> (tempfile::TempDir, EvalContext) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/ssh");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/bash\nadmin:x:{}:{}::/home/admin:/bin/sh\n",
                users_uid(),
                users_gid()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            format!("root:x:0:\nadmins:x:{}:\n", users_gid()),
        )
        .unwrap();
        std::fs::write(
            etc.join("sshd_config"),
            "PermitRootLogin no\n#Banner none\n",
        )
        .unwrap();
        std::fs::set_permissions(
            etc.join("sshd_config"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let ctx = EvalContext::new(dir.path());
        (dir, ctx)
    }

    fn users_uid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
    }
    fn users_gid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| m.gid())
            .unwrap_or(0)
    }

    #[test]
    fn file_exists_and_absent() {
        let (_d, ctx) = tree();
        let s = setting(
            "file_exists",
            &[("path", "/etc/ssh/sshd_config")],
            "exists",
            "",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Compliant);
        assert_eq!(r.observed_before.as_deref(), Some("regular file"));
        let s = setting("file_exists", &[("path", "/etc/hosts.equiv")], "absent", "");
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Compliant);
        assert_eq!(r.observed_before, None);
        let s = setting(
            "file_exists",
            &[("path", "/etc/ssh")],
            "equals",
            "directory",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Compliant);
    }

    #[test]
    fn file_mode_is_remediated_only_when_allowed() {
        let (d, ctx) = tree();
        let mut s = setting(
            "file_mode",
            &[("path", "/etc/ssh/sshd_config")],
            "mode_at_most",
            "0600",
        );
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(state(&r), State::NonCompliant);
        assert_eq!(r.observed_before.as_deref(), Some("0644"));
        assert!(!r.remediated && r.observed_after.is_none());

        s.remediation_allowed = true;
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::NonCompliant, "the deployment did not ask");

        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(state(&r), State::Compliant);
        assert!(r.remediated);
        assert_eq!(r.observed_before.as_deref(), Some("0644"));
        assert_eq!(r.observed_after.as_deref(), Some("0600"));
        let mode = std::fs::metadata(d.path().join("etc/ssh/sshd_config"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);

        // equals sets the exact mode.
        let mut s = setting(
            "file_mode",
            &[("path", "/etc/ssh/sshd_config")],
            "equals",
            "0640",
        );
        s.remediation_allowed = true;
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(r.observed_after.as_deref(), Some("0640"));
        assert_eq!(state(&r), State::Compliant);
    }

    /// A host key linked out of the root (absolutely, or climbing with `..`) is looked up inside
    /// the root, as the device would see it, and the file outside is never changed; a link that
    /// stays inside the root is followed and its target fixed.
    #[test]
    fn links_are_resolved_inside_the_root_and_nothing_outside_changes() {
        let (d, ctx) = tree();
        let outside = tempfile::tempdir().unwrap();
        let key = outside.path().join("ssh_host_ed25519_key");
        std::fs::write(&key, "outside key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let ssh = d.path().join("etc/ssh");
        std::os::unix::fs::symlink(&key, ssh.join("abs_key")).unwrap();
        let climb = format!("../../../../../../../..{}", key.display());
        std::os::unix::fs::symlink(&climb, ssh.join("climb_key")).unwrap();
        std::os::unix::fs::symlink("/etc/ssh/keys", ssh.join("keydir")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ssh.join("outdir")).unwrap();

        for path in [
            "/etc/ssh/abs_key",
            "/etc/ssh/climb_key",
            "/etc/ssh/outdir/ssh_host_ed25519_key",
        ] {
            let mut s = setting("file_mode", &[("path", path)], "mode_at_most", "0600");
            s.remediation_allowed = true;
            s.noncompliant_if_missing = true;
            let r = evaluate_setting(&s, Membership::Required, true, &ctx);
            assert_eq!(state(&r), State::NonCompliant, "{path}");
            assert_eq!(r.observed_before, None, "{path}: not found inside the root");
            assert!(!r.remediated, "{path}");
        }
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o7777,
            0o644,
            "the file outside the root is untouched"
        );

        // The same links resolve to files inside the root when the root has them.
        std::fs::create_dir_all(
            d.path()
                .join(key.parent().unwrap().strip_prefix("/").unwrap()),
        )
        .unwrap();
        let inside = d.path().join(key.strip_prefix("/").unwrap());
        std::fs::write(&inside, "inside key").unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir_all(d.path().join("etc/ssh/keys")).unwrap();
        let linked = d.path().join("etc/ssh/keys/rsa");
        std::fs::write(&linked, "inside rsa").unwrap();
        std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o644)).unwrap();
        for (path, host) in [
            ("/etc/ssh/abs_key", &inside),
            ("/etc/ssh/keydir/rsa", &linked),
        ] {
            let mut s = setting("file_mode", &[("path", path)], "mode_at_most", "0600");
            s.remediation_allowed = true;
            let r = evaluate_setting(&s, Membership::Required, true, &ctx);
            assert_eq!(state(&r), State::Compliant, "{path}: {}", r.error);
            assert!(r.remediated, "{path}");
            let mode = std::fs::metadata(host).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o600, "{path}");
        }
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o7777,
            0o644,
            "the file outside the root is still untouched"
        );
    }

    #[test]
    fn a_link_loop_is_an_error_naming_the_path() {
        let (d, ctx) = tree();
        std::os::unix::fs::symlink("/etc/b", d.path().join("etc/a")).unwrap();
        std::os::unix::fs::symlink("/etc/a", d.path().join("etc/b")).unwrap();
        let s = setting("file_exists", &[("path", "/etc/a")], "exists", "");
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Error);
        assert!(
            r.error.contains("cannot resolve /etc/a: too many levels"),
            "{}",
            r.error
        );
    }

    #[test]
    fn file_mode_of_a_missing_file_is_not_remediated() {
        let (_d, ctx) = tree();
        let mut s = setting(
            "file_mode",
            &[("path", "/etc/ssh/ssh_host_rsa_key")],
            "mode_at_most",
            "0600",
        );
        s.remediation_allowed = true;
        s.noncompliant_if_missing = true;
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(state(&r), State::NonCompliant);
        assert!(!r.remediated && r.observed_after.is_none() && r.error.is_empty());
    }

    #[test]
    fn file_owner_uses_the_devices_names() {
        let (_d, ctx) = tree();
        let s = setting(
            "file_owner",
            &[("path", "/etc/ssh/sshd_config")],
            "equals",
            "root:root",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        let me = if users_uid() == 0 {
            "root:root"
        } else {
            "admin:admins"
        };
        assert_eq!(r.observed_before.as_deref(), Some(me));
        assert_eq!(state(&r) == State::Compliant, users_uid() == 0);
    }

    #[test]
    fn file_contains_finds_the_first_matching_line() {
        let (_d, ctx) = tree();
        let s = setting(
            "file_contains",
            &[
                ("path", "/etc/ssh/sshd_config"),
                ("pattern", "^\\s*PermitRootLogin\\s"),
            ],
            "exists",
            "",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Compliant);
        assert_eq!(r.observed_before.as_deref(), Some("PermitRootLogin no"));
        let s = setting(
            "file_contains",
            &[("path", "/etc/ssh/sshd_config"), ("pattern", "^Banner")],
            "exists",
            "",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::NonCompliant);
        let s = setting(
            "file_contains",
            &[("path", "/etc/missing"), ("pattern", "x")],
            "absent",
            "",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Compliant);
    }

    #[test]
    fn an_unreadable_path_is_an_error_with_its_reason() {
        let (d, ctx) = tree();
        // A file where a directory should be: examining below it fails with ENOTDIR.
        std::fs::write(d.path().join("etc/notadir"), "x").unwrap();
        let s = setting("file_mode", &[("path", "/etc/notadir/x")], "equals", "0600");
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(state(&r), State::Error);
        assert!(r.error.contains("/etc/notadir/x"), "{}", r.error);
    }
}
