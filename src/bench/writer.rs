//! `mprelay bench writer`.

/// Options of `mprelay bench writer`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("mprelay bench writer is not available in this build")
}
