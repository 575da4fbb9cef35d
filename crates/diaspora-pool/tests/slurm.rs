//! The Slurm provider against a real Slurm (`./scripts/test` installs and
//! starts a single-node cluster and exports `DIASPORA_TEST_SLURM=1`).
//! Without it these tests fail, unless `DIASPORA_SKIP_SLURM=1` says to skip.

use diaspora_pool::attempts::{AttemptBook, Verdict};
use diaspora_pool::provider::slurm::{SlurmConfig, SlurmProvider};
use diaspora_pool::provider::Provider;
use diaspora_pool::supervisor::{Demand, PoolEvent, Supervisor};
use diaspora_pool::workers::{JobEnd, LossReason, WorkerEvent};
use diaspora_pool::PoolSpec;
use std::process::Command;
use std::time::{Duration, Instant};

fn slurm() -> bool {
    if std::env::var("DIASPORA_TEST_SLURM").is_ok() {
        return true;
    }
    if std::env::var("DIASPORA_SKIP_SLURM").as_deref() == Ok("1") {
        eprintln!("DIASPORA_SKIP_SLURM=1: Slurm test skipped");
        return false;
    }
    panic!(
        "DIASPORA_TEST_SLURM is not set. Run ./scripts/test (it installs and starts a \
         single-node Slurm), or set DIASPORA_TEST_SLURM=1 with a Slurm cluster at hand, or \
         DIASPORA_SKIP_SLURM=1 to skip"
    );
}

fn spec(extra_worker: &str, heartbeat: &str, min: u32) -> PoolSpec {
    PoolSpec::from_toml(&format!(
        "name = \"slurm-test\"\n[worker]\ncommand = [\"sleep\", \"600\"]\nmemory_mb = 64\n{extra_worker}\n\
         [heartbeat]\n{heartbeat}\n\
         [scaling]\nmin_total = {min}\nmax_total = 4\ncooldown_s = 0\nscale_in_idle_s = 3600\n\
         [[site]]\nname = \"hpc\"\nprovider = \"slurm\"\nmin = {min}\nmax = 4\n"
    ))
    .unwrap()
}

fn provider() -> Box<dyn Provider> {
    Box::new(SlurmProvider::new(SlurmConfig {
        vanish_grace: Duration::from_secs(5),
        ..Default::default()
    }))
}

/// Jobs of ours still pending or running, by `squeue`.
fn live_jobs(ids: &[String]) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["--me", "-h", "-o", "%i|%T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(id, st)| ids.iter().any(|i| i == id) && matches!(*st, "PENDING" | "RUNNING"))
        .map(|(id, _)| id.to_string())
        .collect()
}

fn joined(s: &Supervisor) -> usize {
    s.registry()
        .workers()
        .filter(|w| w.phase == diaspora_pool::workers::Phase::Live)
        .count()
}

/// Steps the supervisor every 500 ms until `done` or `limit`; returns every
/// event and the time taken.
fn run_until(
    s: &mut Supervisor,
    t0: Instant,
    limit: Duration,
    mut each: impl FnMut(&mut Supervisor, u64),
    mut done: impl FnMut(&Supervisor, &[PoolEvent]) -> bool,
) -> (Vec<PoolEvent>, Duration) {
    let start = Instant::now();
    let mut all = Vec::new();
    loop {
        let now = t0.elapsed().as_millis() as u64;
        each(s, now);
        let ev = s.step(now, &Demand::default());
        for e in &ev {
            eprintln!("[{:>6} ms] {}", now, serde_json::to_string(e).unwrap());
        }
        all.extend(ev);
        if done(s, &all) {
            return (all, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "not done within {limit:?}; events: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_slurm_site_keeps_its_minimum_while_jobs_are_scancelled() {
    if !slurm() {
        return;
    }
    let mut s = Supervisor::new(spec("", "source = \"provider\"", 2), vec![provider()]);
    let t0 = Instant::now();
    let (_, took) = run_until(
        &mut s,
        t0,
        Duration::from_secs(60),
        |_, _| {},
        |s, _| joined(s) == 2,
    );
    eprintln!("two Slurm workers running after {took:?}");
    let mut all_jobs: Vec<String> = s.registry().workers().map(|w| w.job.clone()).collect();

    for round in 0..3 {
        let victim = s.registry().workers().next().unwrap().job.clone();
        let out = Command::new("scancel").arg(&victim).output().unwrap();
        assert!(
            out.status.success(),
            "scancel: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (events, took) = run_until(
            &mut s,
            t0,
            Duration::from_secs(60),
            |_, _| {},
            |s, ev| {
                joined(s) == 2
                    && ev
                        .iter()
                        .any(|e| matches!(e, PoolEvent::Worker(WorkerEvent::Lost { .. })))
            },
        );
        let lost: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                PoolEvent::Worker(WorkerEvent::Lost { reason, .. }) => Some(reason.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            lost,
            [LossReason::JobEnded {
                end: JobEnd::Cancelled
            }],
            "round {round}"
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, PoolEvent::Launched { .. })));
        eprintln!(
            "round {round}: job {victim} cancelled; back at 2 running workers after {took:?}"
        );
        all_jobs.extend(s.registry().workers().map(|w| w.job.clone()));
    }
    // Shutting the pool down cancels its jobs: none is left queued or running.
    drop(s);
    let t = Instant::now();
    while !live_jobs(&all_jobs).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "jobs left: {:?}",
            live_jobs(&all_jobs)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_slurm_job_at_its_walltime_is_replaced_before_it_is_killed_and_charges_no_retry() {
    if !slurm() {
        return;
    }
    // One worker with a one-minute walltime (Slurm's least), drained 50 s
    // before it: its replacement starts about 10 s in. The test plays the
    // worker's heartbeats (it holds task "t1" throughout and ignores the
    // drain), so Slurm kills it at its limit with the task in hand.
    let mut s = Supervisor::new(
        spec(
            "walltime_s = 60\ndrain_before_walltime_s = 50",
            "interval_ms = 1000\ntimeout_ms = 600000\nstart_timeout_ms = 600000",
            1,
        ),
        vec![provider()],
    );
    let mut book = AttemptBook::new(s.spec().tasks.clone(), 16);
    let t0 = Instant::now();
    let (_, _) = run_until(
        &mut s,
        t0,
        Duration::from_secs(60),
        |_, _| {},
        |s, _| s.registry().workers().any(|w| w.deadline_ms.is_some()),
    );
    let first = s.registry().workers().next().unwrap().id.clone();
    let first_job = s.registry().workers().next().unwrap().job.clone();
    book.started("t1", &first).unwrap();
    let mut replaced_at = None;
    let mut replacement_job = None;
    let beat = |s: &mut Supervisor, now: u64| {
        if s.registry().get(&first).is_some() {
            s.heartbeat(&first, vec!["t1".into()], now);
        }
        // The replacement is a worker with nothing in hand.
        let others: Vec<String> = s
            .registry()
            .workers()
            .filter(|w| w.id != first)
            .map(|w| w.id.clone())
            .collect();
        for o in others {
            s.heartbeat(&o, vec![], now);
        }
    };
    let (events, _) = run_until(&mut s, t0, Duration::from_secs(150), beat, |s, ev| {
        if replaced_at.is_none() {
            if let Some(w) = s.registry().workers().find(|w| w.id != first) {
                replaced_at = Some(t0.elapsed());
                replacement_job = Some(w.job.clone());
            }
        }
        ev.iter().any(|e| matches!(e, PoolEvent::Worker(WorkerEvent::Lost { worker, .. }) if *worker == first))
    });
    let drained = events.iter().any(|e| {
        matches!(e, PoolEvent::Worker(WorkerEvent::Draining { worker, reason: diaspora_pool::workers::DrainReason::Walltime }) if *worker == first)
    });
    assert!(drained, "the worker was drained ahead of its walltime");
    let (reason, in_flight, charge) = events
        .iter()
        .find_map(|e| match e {
            PoolEvent::Worker(WorkerEvent::Lost {
                worker,
                reason,
                in_flight,
                charge,
                ..
            }) if *worker == first => Some((reason.clone(), in_flight.clone(), *charge)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reason,
        LossReason::JobEnded {
            end: JobEnd::Timeout
        },
        "Slurm killed job {first_job} at its limit"
    );
    assert_eq!(in_flight, ["t1"]);
    assert!(!charge, "a walltime kill is not the task's fault");
    assert_eq!(
        book.lost("t1", charge),
        Verdict::Run {
            attempt: 0,
            backoff: Duration::ZERO
        },
        "the task runs again as its first attempt"
    );
    let killed_at = t0.elapsed();
    let replaced_at = replaced_at.expect("a replacement was launched");
    eprintln!(
        "replacement {} launched {replaced_at:?} in, Slurm killed {first_job} {killed_at:?} in (TIMEOUT)",
        replacement_job.unwrap()
    );
    assert!(
        replaced_at + Duration::from_secs(30) < killed_at,
        "the replacement started well before the kill"
    );
    // The minimum is kept: every replacement also drains 10 s after it
    // starts (same walltime), so the live one may be a newer replacement
    // that is still starting at this instant: step until one is live.
    let beat_all = |s: &mut Supervisor, now: u64| {
        let ids: Vec<String> = s.registry().workers().map(|w| w.id.clone()).collect();
        for id in ids {
            s.heartbeat(&id, vec![], now);
        }
    };
    run_until(&mut s, t0, Duration::from_secs(15), beat_all, |s, _| {
        joined(s) >= 1
    });
    assert_eq!(joined(&s), 1, "the replacement keeps the minimum");
}
