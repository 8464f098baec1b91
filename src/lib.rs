//! mprelay: a management point relay with encrypted intake.
//!
//! Device agents seal and sign compliance reports; relays open, check and spool them durably;
//! site servers pull them into the site database. The modules follow the boxes of DESIGN.md:
//!
//! - [`proto`]: the protobuf wire messages, generated from `proto/` at build time.
//! - [`ids`]: checked identifiers (`DeviceId`, `MessageId`, `KeyEpoch`) built at the boundary.
//! - [`envelope`]: envelope v1 — device key derivation, AES-256-GCM sealing, Ed25519 signing.
//! - [`wire`]: the one mapping from refusals to HTTP status, error code and `Retry-After`.
//! - [`pki`]: the site CA, certificates, master and enrollment secrets, rustls configurations.
//! - [`net`]: the HTTPS server loop with its limits, and a kept-alive HTTPS client.
//! - [`spool`]: the relay's durable SQLite spool with group commit.
//! - [`relay`]: the relay — agent-facing intake listener and site-facing mTLS listener.
//! - [`compliance`]: compliance states, severities, rules and roll-ups, the rules a report's
//!   contents follow (`compliance::report`), and the checked evaluator definitions the policy
//!   import and the agent share (`compliance::check`).
//! - [`policy`]: baseline and configuration item definitions (TOML), their import with revision
//!   history, terms and conditions and the privacy statement URL, and the versioned policy
//!   snapshot the site pushes to relays.
//! - [`store`]: the site database behind one interface (SQLite; PostgreSQL at scale).
//! - [`retention`]: the Delete Aged Configuration Management Data task — settings, schedule,
//!   bounded deletion runs.
//! - [`site`]: the site server — pulls relays, writes batches, serves the admin API.
//! - [`agent`]: the device agent — enrollment, state file, durable queue, submission, and the
//!   evaluators that observe and remediate settings.
//! - [`config`]: TOML configuration files with `MPRELAY_…` environment overrides.
//! - [`clock`]: injectable time sources.
//! - [`metrics`]: counters and histograms in the Prometheus text format.
//! - [`fsutil`]: private (0600), atomic file writes.
//! - [`sample`]: realistic synthetic reports for the benchmarks and tests.
//! - [`faketree`]: fake device file systems the demo and tests evaluate baselines against.
//! - [`demo`]: the whole system in one process on loopback, and the same wiring for tests.
//! - [`bench`]: `mprelay bench …`, measured against ceilings taken in the same run.
//! - [`cli`]: the `mprelay` command line.

#![forbid(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod compliance;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod faketree;
pub mod fsutil;
pub mod ids;
pub mod metrics;
pub mod net;
pub mod pki;
pub mod policy;
pub mod relay;
pub mod retention;
pub mod sample;
pub mod site;
pub mod spool;
pub mod store;
pub mod wire;

/// The generated protobuf messages of `proto/mprelay/v1/mprelay.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/mprelay.v1.rs"));
}
