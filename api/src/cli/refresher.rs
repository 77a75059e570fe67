//! `otobot refresher`: the token refresher on its own (several may run; a
//! lease per connection keeps them from refreshing one token twice).

use anyhow::Result;

use crate::{settings::Settings, startup, telemetry};

/// Arguments of `otobot refresher` (configuration comes from the environment).
#[derive(clap::Args)]
pub struct Args {
    /// One pass over what expires within REFRESH_WINDOW_SECONDS, then exit.
    #[arg(long)]
    once: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let mut settings = Settings::from_env()?;
    telemetry::init(settings.json_logs);
    let state = startup::build_state(&mut settings).await?;
    if args.once {
        let mut total = 0;
        loop {
            let n = crate::oauth::refresh::refresh_expiring(&state, 100)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            total += n;
            if n == 0 {
                break;
            }
        }
        println!("refreshed or attempted {total} connections");
        return Ok(());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(startup::refresher(state, stop_rx));
    startup::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(())
}
