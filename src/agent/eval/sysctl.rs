//! `sysctl`: a kernel parameter read from `<root>/proc/sys`, and its remediation by writing the
//! value there (the running kernel's setting; persisting it in /etc/sysctl.d is a `config_line`
//! setting of its own).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::{EvalContext, Remedy, fsops};
use crate::compliance::check::sysctl::Spec;

impl Spec {
    fn host(&self, ctx: &EvalContext) -> Result<PathBuf, String> {
        ctx.host_path(&self.path)
    }

    /// The value with runs of whitespace (tabs between fields) made single spaces; not found
    /// when the kernel has no such parameter.
    pub fn observe(&self, ctx: &EvalContext) -> Result<Option<String>, String> {
        let Some(bytes) = fsops::read_limited(&self.host(ctx)?, &self.path)? else {
            return Ok(None);
        };
        Ok(Some(
            String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ))
    }

    pub fn remediate(&self, ctx: &EvalContext, expected: &str) -> Result<Remedy, String> {
        let host = self.host(ctx)?;
        let meta = match fs::metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Remedy::NotPossible(format!(
                    "the kernel has no parameter {}",
                    self.key
                )));
            }
            Err(e) => return Err(format!("cannot examine {}: {e}", self.path)),
        };
        fsops::check_writable(&meta, &self.path)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)
            .map_err(|e| format!("cannot open {} for writing: {e}", self.path))?;
        f.write_all(format!("{expected}\n").as_bytes())
            .map_err(|e| format!("the kernel refused {}={expected}: {e}", self.key))?;
        Ok(Remedy::Applied)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::tests::setting;
    use super::super::*;
    use crate::compliance::State;

    fn st(r: &proto::SettingResult) -> State {
        State::from(proto::ComplianceState::try_from(r.state).unwrap())
    }

    fn tree() -> (tempfile::TempDir, EvalContext) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("proc/sys/net/ipv4");
        std::fs::create_dir_all(p.join("conf/eth0.100")).unwrap();
        std::fs::write(p.join("ip_forward"), "1\n").unwrap();
        std::fs::write(p.join("tcp_rmem"), "4096\t131072\t6291456\n").unwrap();
        std::fs::write(p.join("conf/eth0.100/rp_filter"), "0\n").unwrap();
        let ctx = EvalContext::new(dir.path());
        (dir, ctx)
    }

    #[test]
    fn reads_and_normalizes() {
        let (_d, ctx) = tree();
        let s = setting(
            "sysctl",
            &[("key", "net.ipv4.tcp_rmem")],
            "equals",
            "4096 131072 6291456",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(st(&r), State::Compliant);
        let s = setting(
            "sysctl",
            &[("key", "net/ipv4/conf/eth0.100/rp_filter")],
            "one_of",
            "",
        );
        let mut s = s;
        s.rule.as_mut().unwrap().values = vec!["1".into(), "2".into()];
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(r.observed_before.as_deref(), Some("0"));
        assert_eq!(st(&r), State::NonCompliant);
        let s = setting(
            "sysctl",
            &[("key", "kernel.yama.ptrace_scope")],
            "greater_or_equal",
            "1",
        );
        let r = evaluate_setting(&s, Membership::Required, false, &ctx);
        assert_eq!(st(&r), State::NotApplicable);
    }

    #[test]
    fn remediation_writes_the_value() {
        let (d, ctx) = tree();
        let mut s = setting("sysctl", &[("key", "net.ipv4.ip_forward")], "equals", "0");
        s.remediation_allowed = true;
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(st(&r), State::Compliant);
        assert!(r.remediated);
        assert_eq!(
            (r.observed_before.as_deref(), r.observed_after.as_deref()),
            (Some("1"), Some("0"))
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("proc/sys/net/ipv4/ip_forward")).unwrap(),
            "0\n"
        );
    }

    #[test]
    fn a_read_only_sysctl_is_an_error() {
        let (d, ctx) = tree();
        let p = d.path().join("proc/sys/net/ipv4/ip_forward");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        let mut s = setting("sysctl", &[("key", "net.ipv4.ip_forward")], "equals", "0");
        s.remediation_allowed = true;
        let r = evaluate_setting(&s, Membership::Required, true, &ctx);
        assert_eq!(st(&r), State::Error);
        assert_eq!(
            r.error,
            "remediation failed: /proc/sys/net/ipv4/ip_forward is read-only (mode 0444); not changed"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n");
    }
}
