//! The web dashboard against a live `diaspora serve --dashboard`.
//!
//! - In a real headless Chromium (Debian's, driven through its
//!   chromedriver with fantoccini; both named by `DIASPORA_TEST_CHROMIUM`
//!   and `DIASPORA_TEST_CHROMEDRIVER`, which `./scripts/test` sets; skipped
//!   with a note when unset): a topic's rate rises above 0 on the page while
//!   items are produced, an item's lineage opens in the explorer and its
//!   why-chain is read from the DOM, the page fetches nothing from another
//!   origin, and a screenshot is saved (`DIASPORA_TEST_ARTEFACTS`, default
//!   `target/test-artefacts`).
//! - Without a browser: a node that requires identities gets a dashboard
//!   that asks for a token the node accepts; a port in use and a wrong
//!   store are clear errors.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli, free_port, serve_with, Reaped, BIN};
use diaspora_provenance::{EdgeKind, Kind, Provenance, Record};
use serde_json::json;

fn wait_tcp(addr: SocketAddr, what: &str) {
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what} not listening on {addr} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn artefacts_dir() -> PathBuf {
    let dir = std::env::var_os("DIASPORA_TEST_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artefacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A provenance store with a calibration → item frames/0/3 → a
/// reconstruction; returns (store path, calibration id, item id).
fn lineage_store(dir: &Path) -> (String, i64, i64) {
    let store = dir.join("prov.sqlite").display().to_string();
    let mut p = Provenance::open(&store).unwrap();
    let calib = p
        .add(
            Record::new(Kind::Fact, "detector-gain-map")
                .tag("scan", diaspora_provenance::TagValue::infer("17")),
        )
        .unwrap();
    let item = p
        .add(
            Record::item(diaspora_fabric::ItemRef::new("frames", 0, 3))
                .parent(calib, EdgeKind::Derived),
        )
        .unwrap();
    p.add(Record::new(Kind::Data, "epie-recon-3").parent(item, EdgeKind::Derived))
        .unwrap();
    (store, calib, item)
}

/// `GET path` on the dashboard with extra request headers: (status, headers and body).
fn http_get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_rates_rising_and_an_items_why_chain_in_chromium() {
    let (Some(chromium), Some(driver)) = (
        std::env::var_os("DIASPORA_TEST_CHROMIUM"),
        std::env::var_os("DIASPORA_TEST_CHROMEDRIVER"),
    ) else {
        eprintln!(
            "DIASPORA_TEST_CHROMIUM or DIASPORA_TEST_CHROMEDRIVER unset: the dashboard's browser \
             test is skipped (./scripts/test installs chromium and chromium-driver and sets them)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, calib, item) = lineage_store(dir.path());
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = serve_with(
        &dir.path().join("node"),
        data,
        admin,
        "never",
        &[
            "--dashboard",
            &page.to_string(),
            "--prov-store",
            &store,
            "--dashboard-group",
            "analysis",
            "--dashboard-interval-ms",
            "500",
            "--metrics-interval-ms",
            "1000",
            "--retention-s",
            "86400",
        ],
    );
    wait_tcp(page, "the dashboard");
    cli(&node, &["topic", "create", "frames", "--partitions", "2"]);
    cli(&node, &["stream", "init", "scans"]);
    // A second node that a bridge mirrors frames to: its metrics come back
    // to this node's metrics topic, and so to the page.
    let hpc = common::start_node(&dir.path().join("hpc"), "never");
    cli(&hpc, &["topic", "create", "frames", "--partitions", "2"]);
    let _bridge = Reaped::new(
        Command::new(BIN)
            .args(["bridge", "--name", "edge-hpc", "--stats-interval-s", "0"])
            .args(["--from", &format!("{}/frames", node.data)])
            .args(["--to", &format!("{}/frames", hpc.data)])
            .args(["--from-ca", node.ca.to_str().unwrap()])
            .args(["--to-ca", hpc.ca.to_str().unwrap()])
            .args(["--metrics-interval-ms", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn diaspora bridge"),
    );

    // The item's record is invalidated through the CLI, as an operator would.
    let out = Command::new(BIN)
        .args(["prov", "invalidate", &calib.to_string()])
        .args(["--cause", "detector gain map was wrong", "--store", &store])
        .output()
        .unwrap();
    common::assert_success(&out);

    let port = free_port();
    let _driver = Reaped::new(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver"),
    );
    wait_tcp(format!("127.0.0.1:{port}").parse().unwrap(), "chromedriver");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.to_str().unwrap(),
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1500,1250"],
        }),
    );
    let browser =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session through chromedriver");
    let result = drive(&browser, page, &node, item).await;
    // The session is closed on every path, then the result judged.
    let _ = browser.close().await;
    result.unwrap();
}

async fn js(b: &fantoccini::Client, script: &str) -> serde_json::Value {
    b.execute(script, vec![]).await.expect("script runs")
}

async fn wait_js(
    b: &fantoccini::Client,
    script: &str,
    within: Duration,
    what: &str,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let v = js(b, script).await;
        if !v.is_null() && v != json!(false) {
            return v;
        }
        assert!(t0.elapsed() < within, "{what} not seen within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drive(
    b: &fantoccini::Client,
    page: SocketAddr,
    node: &common::Served,
    item: i64,
) -> Result<(), String> {
    b.goto(&format!("http://{page}/"))
        .await
        .map_err(|e| e.to_string())?;
    wait_js(
        b,
        "return document.querySelector('tr[data-topic=\"frames\"]') !== null",
        Duration::from_secs(20),
        "the topic frames on the page",
    )
    .await;
    let before = js(
        b,
        "return Number(document.querySelector('tr[data-topic=\"frames\"] .rate-items').dataset.value)",
    )
    .await;
    assert_eq!(before, json!(0), "no rate before anything is produced");

    // Produce for ~8 s while a group reads part of it, and watch the page.
    let producer = Reaped::new(
        Command::new(BIN)
            .args(["produce", "--topic", "frames", "--synthetic", "4000"])
            .args(["--size", "2048", "--rate", "500"])
            .args([
                "--ca",
                node.ca.to_str().unwrap(),
                "--addr",
                &node.data.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rate = wait_js(
        b,
        "const v = Number(document.querySelector('tr[data-topic=\"frames\"] .rate-items')?.dataset.value);\
         return v > 0 ? v : null",
        Duration::from_secs(30),
        "a produce rate above 0 for frames",
    )
    .await;
    eprintln!("page shows frames at {rate} items/s");
    // A QoS stream publishing its figures, and the bridge's.
    let _stream = Reaped::new(
        Command::new(BIN)
            .args([
                "stream",
                "produce",
                "--topic",
                "scans",
                "--synthetic",
                "3000",
            ])
            .args([
                "--size",
                "4096",
                "--rate",
                "300",
                "--metrics-interval-ms",
                "500",
            ])
            .args([
                "--ca",
                node.ca.to_str().unwrap(),
                "--addr",
                &node.data.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let bridge = wait_js(
        b,
        "const t = document.getElementById('bridges').textContent;\
         return t.includes('bridge=edge-hpc') ? t : null",
        Duration::from_secs(20),
        "the bridge on the page",
    )
    .await;
    assert!(bridge.as_str().unwrap().contains("running"), "{bridge}");
    wait_js(
        b,
        "const t = document.getElementById('streams').textContent;\
         return t.includes('stream producer') && t.includes('topic=scans') ? t : null",
        Duration::from_secs(20),
        "the QoS stream on the page",
    )
    .await;
    let bytes_rate = js(
        b,
        "return Number(document.querySelector('tr[data-topic=\"frames\"] .rate-bytes').dataset.value)",
    )
    .await;
    assert!(bytes_rate.as_f64().unwrap_or(0.0) >= 0.0);
    let group = Command::new(BIN)
        .args([
            "consume", "--topic", "frames", "--group", "analysis", "--count", "500",
        ])
        .args([
            "--ca",
            node.ca.to_str().unwrap(),
            "--addr",
            &node.data.to_string(),
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    common::assert_success(&group);
    wait_js(
        b,
        "return document.querySelector('tr[data-topic=\"frames\"] .lag').textContent.includes('analysis:')",
        Duration::from_secs(10),
        "the group's lag",
    )
    .await;

    // The lineage explorer: the item, its graph up and down, its why-chain.
    let q = b
        .find(fantoccini::Locator::Css("#lineage-q"))
        .await
        .map_err(|e| e.to_string())?;
    q.send_keys("frames/0/3").await.map_err(|e| e.to_string())?;
    b.find(fantoccini::Locator::Css("#lineage-go"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let why = wait_js(
        b,
        "const w = document.getElementById('why-chain'); return w ? w.textContent : null",
        Duration::from_secs(10),
        "the why-chain",
    )
    .await;
    let why = why.as_str().unwrap().to_string();
    eprintln!("why-chain on the page: {why}");
    assert!(
        why.contains("detector gain map was wrong")
            && why.contains(&format!("#{item}"))
            && why.contains("detector-gain-map")
            && why.contains('←'),
        "{why}"
    );
    let up = js(
        b,
        "return [...document.querySelectorAll('#lineage-result .tree')].map(t => t.textContent)",
    )
    .await;
    let up = up.to_string();
    assert!(
        up.contains("epie-recon-3") && up.contains("INVALID"),
        "{up}"
    );

    // Every resource the page loaded came from the dashboard itself.
    let foreign = js(
        b,
        "return performance.getEntriesByType('resource').map(r => r.name)\
         .filter(n => !n.startsWith(location.origin))",
    )
    .await;
    assert_eq!(foreign, json!([]), "the page fetched from elsewhere");

    // Let the rate and lag settle on a frame, then keep a picture.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let png = b.screenshot().await.map_err(|e| e.to_string())?;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artefacts_dir().join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
    drop(producer);
    Ok(())
}

#[test]
fn a_node_with_tokens_gets_a_dashboard_that_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = serve_with(
        dir.path(),
        data,
        admin,
        "never",
        &[
            "--auth",
            "cert-or-token",
            "--superuser",
            "admin",
            "--dashboard",
            &page.to_string(),
        ],
    );
    wait_tcp(page, "the dashboard");
    let clients = dir.path().join("clients");
    let out = Command::new(BIN)
        .args(["certs", "client", "--name", "admin", "--ca-dir"])
        .arg(dir.path().join("certs"))
        .arg("--out")
        .arg(&clients)
        .output()
        .unwrap();
    common::assert_success(&out);
    let as_admin = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args([
                "--ca",
                node.ca.to_str().unwrap(),
                "--admin",
                &admin.to_string(),
            ])
            .args(["--cert", clients.join("admin.pem").to_str().unwrap()])
            .args(["--cert-key", clients.join("admin.key").to_str().unwrap()])
            .env_remove("DIASPORA_TOKEN")
            .output()
            .unwrap();
        common::assert_success(&out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    as_admin(&["user", "add", "alice"]);
    as_admin(&["user", "add", "bob"]);
    as_admin(&["acl", "grant", "allow User:alice describe cluster"]);
    let alice = as_admin(&["token", "create", "--user", "alice", "--ttl", "1h"]);
    let bob = as_admin(&["token", "create", "--user", "bob", "--ttl", "1h"]);

    // No token, a wrong one, or one whose user may not describe the node: refused.
    let (status, body) = http_get(page, "/", "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Token needed"), "{body}");
    assert_eq!(http_get(page, "/api/state", "").0, 401);
    assert_eq!(http_get(page, "/events", "").0, 401);
    assert_eq!(
        http_get(page, "/api/state", "Authorization: Bearer dsp_nonsense\r\n").0,
        401
    );
    assert_eq!(
        http_get(
            page,
            "/api/state",
            &format!("Authorization: Bearer {bob}\r\n")
        )
        .0,
        401
    );
    // Alice's token: as a header, or once in the address, which sets a cookie.
    // The page polls until its first frame: the node's own identity reads
    // the node whatever its ACLs.
    let t0 = Instant::now();
    loop {
        let (status, body) = http_get(
            page,
            "/api/state",
            &format!("Authorization: Bearer {alice}\r\n"),
        );
        assert_eq!(status, 200, "{body}");
        if body.contains("\"node_id\":\"node-") {
            assert!(body.contains("\"error\":null"), "{body}");
            assert!(body.contains("\"auth\":\"cert-or-token\""), "{body}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no frame: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, head) = http_get(page, &format!("/?token={alice}"), "");
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let (status, body) = http_get(page, "/", &format!("Cookie: {pair}\r\n"));
    assert_eq!(status, 200);
    assert!(body.contains("Lineage explorer"), "{body}");
    // The script and style need no token: they hold nothing of the node's.
    assert_eq!(http_get(page, "/app.js", "").0, 200);
}

#[test]
fn a_port_in_use_an_open_network_address_and_a_missing_store_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("n"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "serve {extra:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--dashboard", &taken_addr]);
    assert!(
        e.contains(&taken_addr) && e.contains("already in use"),
        "{e}"
    );
    let e = run(&["--dashboard", "0.0.0.0:0"]);
    assert!(
        e.contains("not a loopback address") && e.contains("--dashboard-open"),
        "{e}"
    );
    let missing = dir.path().join("nope.sqlite");
    let e = run(&[
        "--dashboard",
        "127.0.0.1:0",
        "--prov-store",
        missing.to_str().unwrap(),
    ]);
    assert!(
        e.contains("no SQLite file") && e.contains("nope.sqlite"),
        "{e}"
    );
    let e = run(&["--prov-store", missing.to_str().unwrap()]);
    assert!(e.contains("give --dashboard"), "{e}");
    drop(taken);
}

#[test]
fn diaspora_dashboard_reads_a_node_that_runs_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_node(dir.path(), "never");
    cli(
        &node,
        &["topic", "create", "remote-frames", "--partitions", "3"],
    );
    // A monitor's alert, as `diaspora predict serve` would publish it.
    cli(&node, &["topic", "create", "diaspora.predictions"]);
    let mut produce = Command::new(BIN)
        .args(["produce", "--topic", "diaspora.predictions"])
        .args([
            "--ca",
            node.ca.to_str().unwrap(),
            "--addr",
            &node.data.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(
            br#"{"kind":"alert","monitor":"wan","metric":"quic.rtt_ms","labels":{},"t_us":1,"value":250.0,"expected":12.0,"likelihood":0.99999,"confidence":0.99}"#,
        )
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _dashboard = Reaped::new(
        Command::new(BIN)
            .args(["dashboard", "--listen", &page.to_string()])
            .args(["--admin", &node.admin.to_string()])
            .args(["--addr", &node.data.to_string()])
            .args(["--ca", node.ca.to_str().unwrap()])
            .args(["--dashboard-interval-ms", "200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_tcp(page, "diaspora dashboard");
    let t0 = Instant::now();
    loop {
        let (status, body) = http_get(page, "/api/state", "");
        assert_eq!(status, 200, "{body}");
        let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
        // The body may be chunked; the frame is one JSON object inside.
        let start = json.find('{').unwrap();
        let end = json.rfind('}').unwrap();
        let frame: serde_json::Value = serde_json::from_str(&json[start..=end]).unwrap();
        if let Some(t) = frame["topics"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == "remote-frames"))
        {
            assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
            assert_eq!(frame["node"]["auth"], "dev");
            assert_eq!(frame["lineage"], false);
            let tail = &frame["tails"][0];
            assert_eq!(tail["role"], "predictions", "{frame}");
            let alert = &tail["tail"]["entries"][0];
            if alert.is_null() {
                // The tail's first read may come a frame later.
                std::thread::sleep(Duration::from_millis(100));
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "no alert in {frame}"
                );
                continue;
            }
            assert_eq!(alert["kind"], "alert", "{frame}");
            assert!(
                alert["text"]
                    .as_str()
                    .unwrap()
                    .contains("metric=quic.rtt_ms"),
                "{alert}"
            );
            assert_eq!(alert["item"], "diaspora.predictions/0/0");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no topic in {frame}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The frame's JSON from an `/api/state` answer (the body may be chunked).
fn state_frame(page: SocketAddr) -> Option<serde_json::Value> {
    let Ok(mut s) = TcpStream::connect(page) else {
        return None;
    };
    drop(s.set_read_timeout(Some(Duration::from_secs(10))));
    write!(
        s,
        "GET /api/state HTTP/1.1\r\nHost: {page}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let body = &out[out.find("\r\n\r\n")? + 4..];
    serde_json::from_str(&body[body.find('{')?..=body.rfind('}')?]).ok()
}

#[test]
fn the_demo_shows_its_phases_and_latest_reconstruction() {
    let dir = tempfile::tempdir().unwrap();
    let page: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // The small loop of tests/demo.rs.
    let demo = Reaped::new(
        Command::new(BIN)
            .args(["demo", "--scans", "12", "--positions", "40", "--rate", "40"])
            .args(["--switch-ssim", "0.05", "--fine-tune-every", "1"])
            .args(["--epie-iterations", "10", "--channels", "4", "--batch", "8"])
            .args([
                "--validate-every",
                "5",
                "--json",
                "--no-report",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .args(["--dashboard", &page.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    let (mut phases, mut image) = (std::collections::BTreeSet::new(), None);
    while t0.elapsed() < Duration::from_secs(120) {
        if let Some(f) = state_frame(page) {
            let st = &f["loop_status"];
            if let Some(p) = st["phase"].as_str() {
                phases.insert(p.to_string());
            }
            if st["image"].is_object() {
                image = Some(st["image"].clone());
            }
            if phases.contains("edge inference + fine-tune")
                && image
                    .as_ref()
                    .is_some_and(|i| i["label"].as_str().unwrap().contains("edge model"))
            {
                // The edge's node and the loop's store, on the same page.
                assert!(
                    f["topics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t["name"] == "edge.models"),
                    "{f}"
                );
                assert!(f["lineage"] == true);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("phases seen: {phases:?}");
    assert!(phases.contains("warm-up") || phases.contains("edge inference + fine-tune"));
    assert!(
        phases.contains("edge inference + fine-tune"),
        "the switch not seen: {phases:?}"
    );
    let image = image.expect("a reconstruction on the page");
    let (w, h) = (
        image["width"].as_u64().unwrap(),
        image["height"].as_u64().unwrap(),
    );
    assert!((1..=128).contains(&w) && (1..=128).contains(&h), "{w}×{h}");
    let gray = image["gray"].as_array().unwrap();
    assert_eq!(gray.len() as u64, w * h);
    assert!(
        gray.iter().any(|v| v != &gray[0]),
        "an image, not a flat field"
    );
    let out = demo.take().wait_with_output().unwrap();
    common::assert_success(&out);
}
