//! The one tokio runtime of the process, and waiting on it from Python
//! without holding the GIL.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// How often a blocking wait takes the GIL back to let Ctrl-C through.
const SIGNAL_TICK: Duration = Duration::from_millis(100);

/// The process's runtime (started on first use; one per process, shared
/// with asyncio support through pyo3-async-runtimes).
pub fn rt() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 4);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("pydiaspora")
            .enable_all()
            .build()
            .expect("starting the pydiaspora tokio runtime");
        rt
    })
}

/// Hands the runtime to pyo3-async-runtimes, so awaitables run on it too.
pub fn init_async() {
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt());
}

/// Runs `fut` to completion with the GIL released. Every
/// [`SIGNAL_TICK`] it takes the GIL back to check for signals, so Ctrl-C
/// interrupts a wait (raising `KeyboardInterrupt`) instead of hanging.
///
/// A future that is ready at its first poll (a send with room in the
/// buffer, an item already fetched) completes without releasing the GIL
/// or entering the runtime's scheduler: that is most calls at high rates,
/// and the GIL hand-over would cost more than the work.
pub fn wait<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = T> + Send,
    T: Send,
{
    let mut fut = Box::pin(fut);
    {
        let _in_runtime = rt().enter();
        if let Some(v) = futures_util::FutureExt::now_or_never(fut.as_mut()) {
            return Ok(v);
        }
    }
    loop {
        let r = py.allow_threads(|| {
            rt().block_on(async { tokio::time::timeout(SIGNAL_TICK, fut.as_mut()).await })
        });
        match r {
            Ok(v) => return Ok(v),
            Err(_) => py.check_signals()?,
        }
    }
}

/// Runs the future `make` builds, with the GIL released, for futures that
/// are not `Send` (they borrow a value that is not `Sync` across an
/// await). It cannot be interrupted with Ctrl-C: use it only for waits
/// that are bounded (a flush or close with a timeout).
pub fn wait_bounded<M, F, T>(py: Python<'_>, make: M) -> T
where
    M: FnOnce() -> F + Send,
    F: Future<Output = T>,
    T: Send,
{
    py.allow_threads(move || rt().block_on(make()))
}

/// Like [`wait`], but gives up after `timeout` (`None`: never) with `Ok(None)`.
pub fn wait_for<F, T>(py: Python<'_>, timeout: Option<Duration>, fut: F) -> PyResult<Option<T>>
where
    F: Future<Output = T> + Send,
    T: Send,
{
    match timeout {
        None => wait(py, fut).map(Some),
        Some(t) => wait(py, async move { tokio::time::timeout(t, fut).await.ok() }),
    }
}

/// A timeout in seconds from Python (`None`: wait forever).
pub fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(crate::errors::InvalidRequest::new_err(format!(
            "timeout must be a non-negative number of seconds, not {s}"
        ))),
    }
}
