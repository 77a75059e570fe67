//! Logging: `tracing`, filtered by `RUST_LOG` (default `info`), JSON lines
//! when `LOG_FORMAT=json`.
//!
//! SECURITY: nothing logs headers, bodies or query strings; request spans
//! carry the request id, method and route template only.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // SECURITY: tokio-postgres logs statement parameters at debug level,
        // and the keyring is loaded through parameters. Whatever RUST_LOG says,
        // it never logs below info.
        .add_directive("tokio_postgres=info".parse().expect("a valid directive"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
