//! Fake device file systems for the demo and the tests: the files the example baselines look at
//! (`/etc/ssh`, `/proc/sys`, …) written under a directory, with a realistic, seeded mix of
//! compliant and non-compliant settings — some remediable, some not, and now and then a
//! read-only `/proc/sys` as in a container — so that evaluating them exercises the real
//! evaluators and remediations.
//!
//! The tree's `/etc/passwd` names the owner of the files written (the user running the demo) as
//! `root`: in the simulated device, its root account owns its system files.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::sample::Rng;

/// What was planted in a tree, for checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planted {
    /// A cloud-init drop-in turns password logins back on.
    pub cloud_init_dropin: bool,
    /// /proc/sys is read-only (remediating a sysctl fails).
    pub read_only_proc: bool,
    /// The prohibited rsh server is installed.
    pub rsh_server: bool,
}

/// Writes a device's tree under `root` (created if needed), chosen by `seed`.
pub fn write_device_tree(root: &Path, seed: u64) -> io::Result<Planted> {
    let mut rng = Rng::new(seed ^ 0x5eed_7ee5);
    let mut pick = |pct: u64| rng.percent() < pct;
    let mut planted = Planted::default();

    let ssh = root.join("etc/ssh");
    fs::create_dir_all(ssh.join("sshd_config.d"))?;
    let permit_root = if pick(20) {
        "PermitRootLogin yes\n"
    } else if pick(15) {
        "#PermitRootLogin prohibit-password\n"
    } else {
        "PermitRootLogin no\n"
    };
    let password = if pick(25) {
        "PasswordAuthentication yes\n"
    } else {
        "PasswordAuthentication no\n"
    };
    let max_auth = if pick(30) {
        "#MaxAuthTries 6\n"
    } else if pick(10) {
        "MaxAuthTries 10\n"
    } else {
        "MaxAuthTries 4\n"
    };
    let x11 = if pick(45) {
        "X11Forwarding yes\n"
    } else {
        "X11Forwarding no\n"
    };
    let ciphers = if pick(8) {
        "Ciphers aes256-gcm@openssh.com,aes256-ctr,aes256-cbc\n"
    } else {
        "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr\n"
    };
    let log_level = if pick(5) { "LogLevel DEBUG3\n" } else { "" };
    let config = format!(
        "# This is the sshd server system-wide configuration file.  See\n\
         # sshd_config(5) for more information.\n\n\
         Include /etc/ssh/sshd_config.d/*.conf\n\n\
         #Port 22\n#AddressFamily any\n#ListenAddress 0.0.0.0\n\n\
         # Authentication:\n\n#LoginGraceTime 2m\n{permit_root}#StrictModes yes\n{max_auth}\
         #MaxSessions 10\n\n#PubkeyAuthentication yes\n\n\
         # To disable tunneled clear text passwords, change to no here!\n{password}\
         #PermitEmptyPasswords no\n\nKbdInteractiveAuthentication no\n\nUsePAM yes\n\n\
         #AllowAgentForwarding yes\n#AllowTcpForwarding yes\n{x11}PrintMotd no\n{log_level}{ciphers}\n\
         # Allow client to pass locale environment variables\nAcceptEnv LANG LC_*\n\n\
         # override default of no subsystems\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n\n\
         # Example of overriding settings on a per-user basis\n\
         Match User anoncvs\n\tX11Forwarding yes\n\tPasswordAuthentication yes\n\tPermitTTY no\n"
    );
    write(
        &ssh.join("sshd_config"),
        &config,
        if pick(50) { 0o644 } else { 0o600 },
    )?;
    if pick(15) {
        planted.cloud_init_dropin = true;
        write(
            &ssh.join("sshd_config.d/50-cloud-init.conf"),
            "PasswordAuthentication yes\n",
            0o600,
        )?;
    }
    write(
        &ssh.join("ssh_host_ed25519_key"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n(fake)\n-----END OPENSSH PRIVATE KEY-----\n",
        if pick(6) { 0o644 } else { 0o600 },
    )?;
    write(
        &ssh.join("ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAA fake\n",
        0o644,
    )?;
    if pick(70) {
        write(
            &ssh.join("ssh_host_rsa_key"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n(fake)\n-----END OPENSSH PRIVATE KEY-----\n",
            if pick(6) { 0o640 } else { 0o600 },
        )?;
    }
    if pick(3) {
        write(&root.join("etc/hosts.equiv"), "+\n", 0o644)?;
    }
    if pick(3) {
        planted.rsh_server = true;
        fs::create_dir_all(root.join("usr/sbin"))?;
        write(&root.join("usr/sbin/in.rshd"), "", 0o755)?;
    }

    // The simulated device's accounts: whoever owns these files is its root.
    let owner = fs::metadata(ssh.join("sshd_config"))?;
    write(
        &root.join("etc/passwd"),
        &format!(
            "root:x:{}:{}:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             sshd:x:104:65534::/run/sshd:/usr/sbin/nologin\n",
            owner.uid(),
            owner.gid()
        ),
        0o644,
    )?;
    write(
        &root.join("etc/group"),
        &format!("root:x:{}:\ndaemon:x:1:\n", owner.gid()),
        0o644,
    )?;

    let read_only = pick(8);
    planted.read_only_proc = read_only;
    let mode = if read_only { 0o444 } else { 0o644 };
    let sysctl = |key: &str, value: &str| -> io::Result<()> {
        let p = root.join("proc/sys").join(key.replace('.', "/"));
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir)?;
        }
        write(&p, &format!("{value}\n"), mode)
    };
    sysctl("net.ipv4.ip_forward", if pick(15) { "1" } else { "0" })?;
    sysctl(
        "net.ipv4.conf.all.accept_redirects",
        if pick(40) { "1" } else { "0" },
    )?;
    sysctl(
        "net.ipv4.conf.all.send_redirects",
        if pick(40) { "1" } else { "0" },
    )?;
    sysctl(
        "net.ipv4.conf.all.accept_source_route",
        if pick(5) { "1" } else { "0" },
    )?;
    sysctl(
        "net.ipv4.conf.all.rp_filter",
        if pick(10) { "0" } else { "2" },
    )?;
    sysctl("net.ipv4.tcp_syncookies", "1")?;
    sysctl("net.ipv4.tcp_rmem", "4096\t131072\t6291456")?;
    sysctl("net.ipv4.icmp_echo_ignore_broadcasts", "1")?;
    sysctl("kernel.randomize_va_space", if pick(4) { "0" } else { "2" })?;
    sysctl("kernel.kptr_restrict", if pick(20) { "0" } else { "1" })?;
    sysctl("kernel.dmesg_restrict", if pick(30) { "0" } else { "1" })?;
    sysctl("fs.suid_dumpable", if pick(10) { "2" } else { "0" })?;
    sysctl("fs.protected_symlinks", "1")?;
    if !pick(20) {
        sysctl("kernel.yama.ptrace_scope", if pick(25) { "0" } else { "1" })?;
    }
    Ok(planted)
}

fn write(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_deterministic_and_varied() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_device_tree(&dir.path().join("a"), 7).unwrap();
        let b = write_device_tree(&dir.path().join("b"), 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            fs::read(dir.path().join("a/etc/ssh/sshd_config")).unwrap(),
            fs::read(dir.path().join("b/etc/ssh/sshd_config")).unwrap()
        );
        let configs: std::collections::HashSet<Vec<u8>> = (0..20)
            .map(|i| {
                let d = dir.path().join(format!("t{i}"));
                write_device_tree(&d, i).unwrap();
                fs::read(d.join("etc/ssh/sshd_config")).unwrap()
            })
            .collect();
        assert!(configs.len() > 5);
    }
}
