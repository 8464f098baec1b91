//! The parameters of `sysctl`: the kernel parameter's name, and the file under /proc/sys that
//! holds it.

use super::{DefinitionError, Params};

/// A checked `sysctl` evaluator.
#[derive(Debug, Clone)]
pub struct Spec {
    /// As written: `net.ipv4.ip_forward`, or with slashes when a component holds a dot
    /// (`net/ipv4/conf/eth0.100/rp_filter`).
    pub key: String,
    /// The device path under /proc/sys.
    pub(crate) path: String,
}

impl Spec {
    pub(crate) fn parse(p: &mut Params<'_>) -> Result<Self, DefinitionError> {
        let key = p.required("key")?;
        let ok = key.len() <= 256
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !key.starts_with(['.', '/'])
            && !key.split(['.', '/']).any(str::is_empty);
        if !ok || key.contains("..") {
            return Err(p.bad(
                "key",
                format!("{key:?} is not a sysctl name such as net.ipv4.ip_forward"),
            ));
        }
        let rel = if key.contains('/') {
            key.to_string()
        } else {
            key.replace('.', "/")
        };
        Ok(Self {
            key: key.to_string(),
            path: format!("/proc/sys/{rel}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::tests::setting;

    #[test]
    fn bad_keys_are_refused() {
        for k in [
            "",
            "net..ipv4",
            "/net/ipv4",
            "net.ipv4.ip forward",
            "../../etc/shadow",
        ] {
            let s = setting("sysctl", &[("key", k)], "equals", "0");
            assert!(Check::parse(&s).is_err(), "{k}");
        }
    }
}
