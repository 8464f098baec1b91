//! `mprelay bench intake`.

/// Options of `mprelay bench intake`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("mprelay bench intake is not available in this build")
}
