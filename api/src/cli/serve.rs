//! `otobot serve`: the internal API on INTERNAL_API_PORT (default 3001).

use anyhow::Result;

use crate::{settings::Settings, startup, telemetry};

/// Arguments of `otobot serve` (configuration comes from the environment).
#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.json_logs);
    let app = startup::Application::build(settings).await?;
    app.run_until(startup::shutdown_signal()).await
}
