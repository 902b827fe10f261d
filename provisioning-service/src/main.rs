//! `provisioning-service`: serve, enroll, bulk-enroll, migrate, hub-watch, crl-sync. The thin
//! edge: parse the command line, set up logging and the database, hand over to the library.

use anyhow::Context;
use clap::Parser;
use provisioning_service::config::{Cli, Command, DatabaseArgs};
use provisioning_service::sealing::Sealer;
use provisioning_service::{factory, server, telemetry, tls, App, MIGRATOR};
use sqlx::PgPool;

async fn connect(db: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = provisioning_service::store::pool_options(
        db.max_connections(),
        std::time::Duration::from_millis(db.db_acquire_timeout_ms),
    )
    .connect(&db.database_url)
    .await
    .context("cannot connect to the database")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply the database migrations")?;
    Ok(pool)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let settings = args.settings().context("invalid configuration")?;
            let sealer =
                Sealer::from_file(&args.service_key_file).context("cannot load the service key")?;
            let tls = tls::server_config(&args.tls_cert_file, &args.tls_key_file)
                .context("cannot load TLS")?;
            let pool = connect(&args.database).await?;
            let listener = std::net::TcpListener::bind(args.listen)
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            tracing::info!(listen = %args.listen, id_scope = %settings.id_scope, hubs = ?settings.linked_hubs.as_slice(), "serving");
            let app = App::new(pool, sealer, settings)?;
            tokio::spawn(server::housekeeping(
                app.clone(),
                std::time::Duration::from_secs(30),
            ));
            let side_listeners = [
                (
                    args.hub_auth_listen,
                    "the brokers' auth hooks",
                    provisioning_service::http::hub_hooks::router as fn(App) -> axum::Router,
                ),
                (
                    args.metrics_listen,
                    "metrics",
                    provisioning_service::http::metrics_router,
                ),
            ];
            for (addr, what, router) in side_listeners {
                let Some(addr) = addr else { continue };
                let side = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                tracing::info!(listen = %addr, "serving {what}");
                tokio::spawn(server::serve_plain(
                    router(app.clone()),
                    side,
                    server::shutdown_signal(),
                ));
            }
            server::serve_tls(app, listener, tls, server::shutdown_signal()).await?;
        }
        Command::Enroll(args) => {
            let pool = connect(&args.database).await?;
            let (id, outcome) = factory::enroll_one(&pool, &args).await?;
            println!(
                "{id}: {}",
                if outcome == factory::Outcome::Written {
                    "enrolled"
                } else {
                    "unchanged"
                }
            );
        }
        Command::BulkEnroll(args) => {
            let pool = connect(&args.database).await?;
            let s = factory::enroll_file(&pool, &args, |e| eprintln!("{e}")).await?;
            println!(
                "{} written, {} unchanged, {} failed",
                s.written, s.unchanged, s.failed
            );
            anyhow::ensure!(s.failed == 0, "{} lines failed", s.failed);
        }
        Command::HubWatch(args) => {
            let policies = provisioning_service::config::read_policies(&args.access_policy_file)?;
            provisioning_service::watch::watch(&args, &policies).await?;
        }
        Command::CrlSync(args) => provisioning_service::crl_sync::run(&args).await?,
        Command::Migrate(db) => {
            connect(&db).await?;
            println!("migrations applied");
        }
    }
    Ok(())
}
