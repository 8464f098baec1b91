//! The agent's durable outbox: one file per unsent submission, written atomically, removed only
//! after the relay answered 202 or 200. Files hold the encoded `Submission` (what gets signed);
//! sealing happens at each send, with a fresh nonce and whatever key the agent holds then, so a
//! re-enrollment never strands queued reports.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::fsutil::write_private_atomic;
use crate::ids::MessageId;

/// A queued submission.
#[derive(Debug, Clone)]
pub struct Queued {
    pub path: PathBuf,
    pub message_id: MessageId,
    pub submission: Vec<u8>,
}

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    max_entries: usize,
}

impl Queue {
    pub fn open(dir: &Path, max_entries: usize) -> io::Result<Self> {
        fs::create_dir_all(dir.join("dropped"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_entries,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a submission durably (it survives a crash right after this returns). Past the bound,
    /// the oldest entries are moved to `dropped/` to make room.
    pub fn push(&self, created_ms: i64, id: MessageId, submission: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.join(format!("{:016}-{id}.sub", created_ms.max(0)));
        write_private_atomic(&path, submission)?;
        let entries = self.names()?;
        if entries.len() > self.max_entries {
            for name in &entries[..entries.len() - self.max_entries] {
                warn!(file = %name, "agent queue is full; dropping the oldest submission");
                self.drop_entry(&self.dir.join(name), "queue full")?;
            }
        }
        Ok(path)
    }

    fn names(&self) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".sub"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Queued submissions, oldest first. Unreadable or misnamed files are moved aside.
    pub fn list(&self) -> io::Result<Vec<Queued>> {
        let mut out = Vec::new();
        for name in self.names()? {
            let path = self.dir.join(&name);
            let id = name
                .trim_end_matches(".sub")
                .split_once('-')
                .and_then(|(_, id)| id.parse::<MessageId>().ok());
            match (id, fs::read(&path)) {
                (Some(message_id), Ok(submission)) => out.push(Queued {
                    path,
                    message_id,
                    submission,
                }),
                (None, _) => self.drop_entry(&path, "file name is not <time>-<message id>.sub")?,
                (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
                (_, Err(e)) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> io::Result<usize> {
        Ok(self.names()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes a submission the relay accepted.
    pub fn remove(&self, q: &Queued) -> io::Result<()> {
        remove_if_there(&refusals_path(&q.path))?;
        remove_if_there(&q.path)
    }

    /// Counts one more refusal of `q` without an error code, durably (beside it, in
    /// `<name>.refusals`), and returns how many it had so far.
    pub fn note_refusal(&self, q: &Queued) -> io::Result<u32> {
        let path = refusals_path(&q.path);
        let before = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u32>().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let n = before.saturating_add(1);
        write_private_atomic(&path, format!("{n}\n").as_bytes())?;
        Ok(n)
    }

    /// Moves a submission the relay refused for good into `dropped/`, with the reason beside it.
    pub fn drop_entry(&self, path: &Path, reason: &str) -> io::Result<()> {
        let Some(name) = path.file_name() else {
            return Ok(());
        };
        let target = self.dir.join("dropped").join(name);
        fs::write(target.with_extension("reason"), format!("{reason}\n"))?;
        remove_if_there(&refusals_path(path))?;
        match fs::rename(path, &target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Number of dropped submissions kept for inspection.
    pub fn dropped(&self) -> io::Result<usize> {
        Ok(fs::read_dir(self.dir.join("dropped"))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sub"))
            .count())
    }
}

/// Where the refusals of the submission at `path` are counted.
fn refusals_path(path: &Path) -> PathBuf {
    path.with_extension("refusals")
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_list_remove_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 100).unwrap();
        let a = MessageId::new();
        let b = MessageId::new();
        q.push(2, b, b"second").unwrap();
        q.push(1, a, b"first").unwrap();
        let l = q.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].message_id, a);
        assert_eq!(l[0].submission, b"first");
        q.remove(&l[0]).unwrap();
        assert_eq!(q.len().unwrap(), 1);
        q.drop_entry(&l[1].path, "stale").unwrap();
        assert!(q.is_empty().unwrap());
        assert_eq!(q.dropped().unwrap(), 1);
    }

    #[test]
    fn bound_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 2).unwrap();
        for t in 0..4 {
            q.push(t, MessageId::new(), b"x").unwrap();
        }
        let l = q.list().unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[0].path.to_string_lossy().contains("0000000000000002-"));
        assert_eq!(q.dropped().unwrap(), 2);
    }

    #[test]
    fn refusals_are_counted_per_entry_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), 100).unwrap();
        q.push(1, MessageId::new(), b"refused").unwrap();
        q.push(2, MessageId::new(), b"other").unwrap();
        let l = q.list().unwrap();
        assert_eq!(q.note_refusal(&l[0]).unwrap(), 1);
        assert_eq!(q.note_refusal(&l[0]).unwrap(), 2);
        assert_eq!(q.note_refusal(&l[1]).unwrap(), 1);
        // A restart keeps the counts, and the count files are not queued submissions.
        let q = Queue::open(dir.path(), 100).unwrap();
        assert_eq!(q.len().unwrap(), 2);
        assert_eq!(q.note_refusal(&l[0]).unwrap(), 3);
        q.drop_entry(&l[0].path, "refused").unwrap();
        q.remove(&l[1]).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["dropped"]);
    }
}
