//! The `diaspora` command-line tool. Run `diaspora --help`.
//!
//! This file parses the command line and dispatches: the clap definitions
//! and each command family live in the library ([`diaspora::cli`]), and
//! every service loop in its crate.

use anyhow::Result;
use clap::Parser;
use diaspora::cli::{self, bench::BenchCommand, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let telemetry = cli::init_tracing(cli.command.log_default());
        let r = run(cli.command).await;
        cli::finish_tracing(telemetry).await;
        r
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(a) => cli::serve::serve(a).await,
        Command::Certs(a) => cli::serve::certs(a),
        Command::Topic(t) => cli::topic::run(t).await,
        Command::Produce(a) => cli::data::produce(a).await,
        Command::Consume(a) => cli::data::consume(a).await,
        Command::Bridge(a) => cli::bridge::run(a).await,
        Command::Twin(t) => cli::twin::run(t).await,
        Command::Bench(BenchCommand::Fabric(a)) => cli::bench::fabric(a).await,
        Command::Bench(BenchCommand::Stream(a)) => cli::bench::stream(a).await,
        Command::Bench(BenchCommand::Predict(a)) => {
            tokio::task::block_in_place(|| cli::predict::bench(a))
        }
        Command::Demo(a) => cli::demo::run(a).await,
        Command::Stream(s) => cli::stream::run(s).await,
        Command::View(v) => cli::view::run(v).await,
        Command::Predict(p) => cli::predict::run(p).await,
        Command::Prov(p) => {
            // The store is blocking code: it runs on a blocking thread.
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || cli::prov::run(p, rt)).await?
        }
    }
}
