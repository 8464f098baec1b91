//! Build steps:
//! - compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler) feeding prost-build,
//!   so building mprelay never needs a `protoc` binary;
//! - embeds every `migrations/<backend>/NNNN_name.sql` into the binary, so the one binary carries
//!   its schema and a new migration cannot be forgotten in a list.

use std::fmt::Write;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/mprelay/v1/mprelay.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;

    let out = std::env::var("OUT_DIR")?;
    let mut code = String::new();
    for backend in ["sqlite", "postgres"] {
        let dir = Path::new("migrations").join(backend);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.retain(|p| p.extension().is_some_and(|e| e == "sql"));
        entries.sort();
        writeln!(
            code,
            "pub const {}: &[(i64, &str, &str)] = &[",
            backend.to_uppercase()
        )?;
        for p in entries {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or("bad file name")?;
            let (num, name) = stem
                .split_once('_')
                .ok_or_else(|| format!("{}: expected NNNN_name.sql", p.display()))?;
            let version: i64 = num
                .parse()
                .map_err(|_| format!("{}: expected NNNN_name.sql", p.display()))?;
            let abs = std::fs::canonicalize(&p)?;
            writeln!(
                code,
                "    ({version}, {name:?}, include_str!({:?})),",
                abs.display().to_string()
            )?;
        }
        writeln!(code, "];")?;
    }
    std::fs::write(Path::new(&out).join("migrations.rs"), code)?;
    Ok(())
}
