//! `mprelay bench …`: measurements against the targets of DESIGN section 9. Every benchmark
//! measures its own ceiling in the same run and prints, as JSON on its last line, its result
//! beside that ceiling as a ratio — the machine is shared and noisy, ratios travel better than
//! absolute figures.

pub mod connections;
pub mod e2e;
pub mod harness;
pub mod intake;
pub mod policy;
pub mod retention;
pub mod writer;

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Site-database writer throughput against a bare bulk insert (DESIGN section 9).
    Writer(writer::Args),
    /// Relay intake throughput and latency against the open-and-verify ceiling.
    Intake(intake::Args),
    /// Idle agent connections held at once, and the relay's memory.
    Connections(connections::Args),
    /// The retention task's delete rate and the writer's latency while it runs.
    Retention(retention::Args),
    /// Reports from agents into the site database through a relay and a site server, against
    /// the relay's intake alone.
    E2e(e2e::Args),
    /// Targeted policy at scale: membership recompute, snapshot size, relay CPU per fetch.
    Policy(policy::Args),
}

/// Runs one benchmark.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Writer(a) => writer::run(a).await,
        BenchCmd::Intake(a) => intake::run(a).await,
        BenchCmd::Connections(a) => connections::run(a).await,
        BenchCmd::Retention(a) => retention::run(a).await,
        BenchCmd::E2e(a) => e2e::run(a).await,
        BenchCmd::Policy(a) => policy::run(a).await,
    }
}
