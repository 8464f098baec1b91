//! The configuration loader: arbitrary TOML for each of the three files, and arbitrary
//! `MPRELAY_…=value` environment overrides (one per line) applied on top.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mprelay::config::{self, AgentFile, RelayFile, SiteFile};

fn file() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("mprelay-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d.join("fuzz.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once("\0").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = file();
    std::fs::write(path, toml).expect("write the fuzz file");
    if let Ok(l) = config::load::<RelayFile>(Some(path), "relay", env.clone()) {
        // Loads certificates and secrets the file names; none exist, so this must fail cleanly.
        let _ = l.to_options();
    }
    if let Ok(l) = config::load::<SiteFile>(Some(path), "site", env.clone()) {
        let _ = l.pull_options();
        let _ = l.database_url();
    }
    let _ = config::load::<AgentFile>(Some(path), "agent", env.clone());
    let _ = config::load::<RelayFile>(None, "relay", env);
});
