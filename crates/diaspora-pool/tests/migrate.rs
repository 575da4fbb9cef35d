//! Live migration on a real (in-process) node: a task keeps changing a
//! large state while it is moved to another worker by pre-copy rounds and a
//! short stop-and-copy; nothing of its state is lost.

use diaspora_fabric::{Client, ClientConfig, Node, NodeConfig};
use diaspora_pool::fabric::{ensure_migrate_topics, migrate_receive, migrate_send};
use diaspora_pool::migrate::{PagedState, PreCopyPolicy};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_large_changing_state_moves_without_losing_any_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(NodeConfig::new(dir.path())).await.unwrap();
    ensure_migrate_topics(node.broker().into(), "mig")
        .await
        .unwrap();
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();

    // Worker A's task: 16 MiB of state in 64 KiB pages, 4 KiB written at
    // pseudo-random places about every 2 ms while it runs.
    const LEN: usize = 16 << 20;
    let state = Arc::new(tokio::sync::Mutex::new(PagedState::new(LEN, 64 << 10)));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let task = {
        let (state, stop, writes) = (state.clone(), stop.clone(), writes.clone());
        tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % LEN;
                let n = writes.fetch_add(1, Ordering::Relaxed);
                state.lock().await.write(at, &[(n % 251) as u8; 4096]);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Worker B receives into a state of the same shape.
    let receiver = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut target = PagedState::new(LEN, 64 << 10);
            let rounds = migrate_receive(
                &client,
                "mig",
                "task-1",
                &mut target,
                Duration::from_secs(120),
            )
            .await
            .unwrap();
            (target, rounds)
        })
    };
    let policy = PreCopyPolicy {
        switch_bytes: 512 << 10,
        max_rounds: 20,
        min_shrink: 0.95,
    };
    let (report, frozen) = migrate_send(&client, "mig", "task-1", state.clone(), policy)
        .await
        .unwrap();
    // The source is frozen at the switch-over: stop its task.
    stop.store(true, Ordering::Relaxed);
    let source_sum = frozen.checksum();
    let writes_at_switch = writes.load(Ordering::Relaxed);
    drop(frozen);
    task.await.unwrap();
    let (target, rounds) = receiver.await.unwrap();

    eprintln!(
        "migrated {} MiB in {} rounds ({:?} chunks per round), {:.1} MiB moved, pause {:.1} ms, total {:.0} ms, {} writes while it ran",
        report.state_bytes >> 20,
        report.rounds,
        report.chunks_per_round,
        report.bytes as f64 / (1 << 20) as f64,
        report.pause.as_secs_f64() * 1000.0,
        report.total.as_secs_f64() * 1000.0,
        writes_at_switch
    );
    assert_eq!(
        target.checksum(),
        source_sum,
        "the target holds the state as it was at the pause"
    );
    assert_eq!(rounds, report.rounds);
    assert!(
        report.rounds >= 2,
        "pre-copy ran at least one round besides the stop-and-copy"
    );
    assert!(
        writes_at_switch > 10,
        "the task really changed its state during the migration"
    );
    assert!(
        report.bytes >= report.state_bytes,
        "round 0 copies everything"
    );
    assert!(report.pause < report.total);
    client.close();
    node.shutdown().await;
}
