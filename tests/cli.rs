//! The command line's definitions, checked in-process through the library
//! (`diaspora::cli::Cli`), without spawning the binary: clap's own
//! consistency checks, and argument lists the tools that drive the binary
//! (the twin runner, the README) rely on.

use clap::{CommandFactory, Parser};
use diaspora::cli::{Cli, Command};

#[test]
fn the_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn argument_lists_parse_against_the_real_definitions() {
    for argv in [
        &[
            "diaspora",
            "serve",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:0",
        ][..],
        &[
            "diaspora", "consume", "--topic", "t", "--count", "3", "--json",
        ],
        &[
            "diaspora",
            "stream",
            "produce",
            "--topic",
            "t",
            "--synthetic",
            "5",
        ],
        &[
            "diaspora",
            "predict",
            "serve",
            "--monitor",
            "m.toml",
            "--idle-s",
            "2",
        ],
        &[
            "diaspora",
            "view",
            "run",
            "--spec",
            "v.toml",
            "--max-items",
            "4",
        ],
        &[
            "diaspora",
            "demo",
            "--skeleton",
            "--frames",
            "8",
            "--width",
            "16",
            "--height",
            "16",
        ],
        &["diaspora", "demo", "--scans", "4", "--json", "--no-report"],
        &["diaspora", "bench", "stream", "--lineage", "--json"],
    ] {
        if let Err(e) = Cli::try_parse_from(argv) {
            panic!("{argv:?}: {e}");
        }
    }
    let serve = Cli::try_parse_from(["diaspora", "serve"]).unwrap();
    assert!(matches!(serve.command, Command::Serve(_)));
    assert_eq!(serve.command.log_default(), "info");
}

#[test]
fn a_renamed_or_unknown_flag_is_refused() {
    for argv in [
        &["diaspora", "consume", "--topic", "t", "--cnt", "3"][..],
        &["diaspora", "predict", "serve"],
        &["diaspora", "no-such-command"],
        // The skeleton's flags need --skeleton.
        &["diaspora", "demo", "--frames", "8"],
    ] {
        assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} parsed");
    }
}

/// Every command line the twin runner would give the binary, for every
/// scenario shipped under `twins/`, parses against the CLI's own
/// definitions: a flag renamed on one side fails here, not in a twin run.
#[test]
fn the_twin_runners_command_lines_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("twins");
    let invocations = diaspora_twin::example_invocations(&dir).expect("the shipped scenarios load");
    let mut kinds = std::collections::BTreeSet::new();
    for inv in &invocations {
        let argv = std::iter::once("diaspora".to_string()).chain(inv.argv.iter().cloned());
        if let Err(e) = Cli::try_parse_from(argv) {
            panic!("{} {}: {:?}: {e}", inv.scenario, inv.kind, inv.argv);
        }
        kinds.insert(inv.kind);
        // The check has teeth: the same line with its first flag renamed is refused.
        let mut renamed = inv.argv.clone();
        let flag = renamed
            .iter_mut()
            .find(|a| a.starts_with("--"))
            .unwrap_or_else(|| panic!("{} {}: no flag in {:?}", inv.scenario, inv.kind, inv.argv));
        flag.insert_str(2, "renamed-");
        let argv = std::iter::once("diaspora".to_string()).chain(renamed);
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "{}: renamed flag parsed",
            inv.kind
        );
    }
    for kind in ["node", "topic", "bridge", "consumer", "producer", "monitor"] {
        assert!(
            kinds.contains(kind),
            "no shipped scenario starts a {kind}: {kinds:?}"
        );
    }
}

#[test]
fn bench_peers_is_there_with_or_without_its_feature() {
    use diaspora::cli::bench::BenchCommand;
    let cli = Cli::try_parse_from([
        "diaspora",
        "bench",
        "peers",
        "--scale",
        "0.01",
        "--rounds",
        "1",
        "--systems",
        "nats,redis",
    ])
    .unwrap();
    let Command::Bench(BenchCommand::Peers(args)) = cli.command else {
        panic!("not bench peers");
    };
    assert_eq!(args.systems, ["nats", "redis"]);
    assert_eq!(args.workloads.len(), 3);
    let help = Cli::command()
        .find_subcommand_mut("bench")
        .unwrap()
        .render_help()
        .to_string();
    assert!(help.contains("peers"), "{help}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    #[cfg(not(feature = "peers"))]
    {
        // Without the feature: a clear error that says how to get it.
        let e = rt.block_on(diaspora::cli::bench::peers(args)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bench peers needs the peers feature: cargo run --release --features peers -- bench peers"
        );
    }
    #[cfg(feature = "peers")]
    {
        // With it: the flags become a valid configuration, and bad ones are refused.
        drop(rt);
        let config = args.config().unwrap();
        assert_eq!(config.systems.len(), 2);
        assert_eq!(config.workloads[2].scaled_items(config.scale), 20);
        let mut bad = args.clone();
        bad.window_bytes = "lots".into();
        assert!(bad.config().is_err());
        let mut bad = args;
        bad.systems = vec!["kafka".into()];
        assert!(bad.config().unwrap_err().to_string().contains("kafka"));
    }
}
