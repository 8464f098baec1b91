//! `mprelay bench connections`.

/// Options of `mprelay bench connections`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("mprelay bench connections is not available in this build")
}
