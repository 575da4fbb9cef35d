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
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// An error and its causes, joined by `: ` as anyhow's `{:#}` does, but
/// without a cause whose text the message already ends with: the crates'
/// typed errors include their source's text in their own (so that
/// `to_string()` says everything), and anyhow would print it twice.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.is_empty() {
            text = cause;
        } else if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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
        Command::Pool(p) => cli::pool::run(p).await,
        Command::Trigger(t) => cli::trigger::run(t).await,
        Command::KafkaBridge(a) => cli::kafka::run(a).await,
        Command::KafkaConsume(a) => cli::kafka::consume(a).await,
        Command::User(c) => cli::auth::user(c).await,
        Command::Token(c) => cli::auth::token(c).await,
        Command::Acl(c) => cli::auth::acl(c).await,
        Command::Whoami(c) => cli::auth::whoami(c).await,
        Command::Dashboard(a) => cli::dashboard::run(a).await,
        Command::Tenant(c) => cli::auth::tenant(c).await,
        Command::Bench(BenchCommand::Fabric(a)) => cli::bench::fabric(a).await,
        Command::Bench(BenchCommand::Pool(a)) => cli::bench::pool(a).await,
        Command::Bench(BenchCommand::Wan(a)) => cli::bench::wan(a).await,
        Command::Bench(BenchCommand::Tenants(a)) => cli::bench::tenants(a).await,
        Command::Bench(BenchCommand::KafkaBridge(a)) => cli::bench::kafka_bridge(a).await,
        Command::Bench(BenchCommand::Python(a)) => cli::pybench::python(a).await,
        Command::Bench(BenchCommand::Peers(a)) => cli::bench::peers(a).await,
        Command::Bench(BenchCommand::Stream(a)) => cli::bench::stream(a).await,
        Command::Bench(BenchCommand::Predict(a)) => {
            tokio::task::block_in_place(|| cli::predict::bench(a))
        }
        Command::Bench(BenchCommand::Ptycho(a)) => {
            tokio::task::block_in_place(|| cli::ptycho::bench(a))
        }
        Command::Ptycho(p) => tokio::task::block_in_place(|| cli::ptycho::run(p)),
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

#[cfg(test)]
mod tests {
    use super::error_text;
    use anyhow::Context;

    #[test]
    fn a_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        // A context and a plain cause: both, as `{:#}` prints them.
        let e = Err::<(), _>(io()).context("reading x").unwrap_err();
        assert_eq!(error_text(&e), format!("{e:#}"));
        assert_eq!(error_text(&e), "reading x: gone");
        // A typed error whose message already includes its source: once.
        let e = anyhow::Error::from(diaspora_predict::PredictError::Io {
            path: "x".into(),
            source: io(),
        });
        assert_eq!(format!("{e:#}"), "reading x: gone: gone");
        assert_eq!(error_text(&e), "reading x: gone");
        // …also under a context.
        let e = e.context("loading");
        assert_eq!(error_text(&e), "loading: reading x: gone");
    }
}
