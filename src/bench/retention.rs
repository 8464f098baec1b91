//! `mprelay bench retention`.

/// Options of `mprelay bench retention`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("mprelay bench retention is not available in this build")
}
