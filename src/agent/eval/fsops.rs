//! File reading and rewriting for evaluators: bounded reads, and atomic replacement that keeps
//! a file's mode and owner.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Largest file an evaluator reads: configuration files are small, and a device must not be
/// made to read a huge file by a policy.
pub const MAX_READ: u64 = 4 * 1024 * 1024;

/// Reads a file of at most [`MAX_READ`] bytes; `None` when it does not exist. `shown` is the
/// device path used in messages.
pub fn read_limited(path: &Path, shown: &str) -> Result<Option<Vec<u8>>, String> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let mut buf = Vec::new();
    f.take(MAX_READ + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if buf.len() as u64 > MAX_READ {
        return Err(format!(
            "{shown} is larger than {} MiB; not read",
            MAX_READ >> 20
        ));
    }
    Ok(Some(buf))
}

/// Refuses to write a file whose mode grants no write permission to anyone. The agent usually
/// runs as root, which the kernel would let through; a file made read-only (and a read-only
/// sysctl, mode 0444) is an administrator's or the kernel's decision the agent respects.
pub fn check_writable(meta: &fs::Metadata, shown: &str) -> Result<(), String> {
    if meta.permissions().mode() & 0o222 == 0 {
        return Err(format!(
            "{shown} is read-only (mode {:04o}); not changed",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory with the
/// original's mode and owner, synced, renamed over the original, and the directory synced. A
/// crash leaves the old file or the new one, never a mix.
pub fn replace_file(path: &Path, contents: &[u8], shown: &str) -> Result<(), String> {
    let fail = |what: &str, e: io::Error| format!("cannot {what} {shown}: {e}");
    let meta = fs::symlink_metadata(path).map_err(|e| fail("examine", e))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{shown} is a symbolic link; the agent edits regular files only"
        ));
    }
    check_writable(&meta, shown)?;
    let dir = path
        .parent()
        .ok_or_else(|| format!("{shown} has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{shown} has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.mprelay-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let mode = meta.mode() & 0o7777;
    let result = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        // Owner first: chown clears set-id bits, so the mode goes on after it.
        std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(fail("rewrite", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_mode_and_refuses_read_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&p, b"new", "/f").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
        let e = replace_file(&p, b"newer", "/f").unwrap_err();
        assert!(e.contains("/f is read-only (mode 0444)"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let f = fs::File::create(&p).unwrap();
        f.set_len(MAX_READ + 10).unwrap();
        let e = read_limited(&p, "/big").unwrap_err();
        assert!(e.contains("/big is larger than"), "{e}");
        assert_eq!(read_limited(&dir.path().join("none"), "/none"), Ok(None));
    }
}
