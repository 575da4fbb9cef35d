//! # pydiaspora: diaspora from Python
//!
//! The extension module behind the `pydiaspora` package (pyo3; maturin
//! builds the wheel from `pyproject.toml`). Python code imports
//! `pydiaspora`, whose `__init__.py` re-exports these classes.
//!
//! - [`client`]: `Node` (an embedded node), `Client`, `Producer` with
//!   `Delivery` acknowledgements, `Consumer` (assign or group, commit,
//!   seek, iteration, asyncio).
//! - [`item`]: `Item` and its zero-copy `Payload`; NumPy arrays in and out
//!   under the `ndarray.dtype` / `ndarray.shape` metadata convention of
//!   `diaspora_stream::ndarray`.
//! - [`stream`]: QoS streams, `StreamProducer` / `StreamConsumer` under a
//!   policy file, and the `StreamItem`s they deliver.
//! - [`view`]: `View` (a join over topics from a view spec) and its
//!   `ViewItem`s, whose members are the source items.
//! - [`prov`]: `Provenance` (lineage, why, invalidate, model_at).
//! - [`errors`]: one Python exception class per kind of fabric error.
//!
//! One tokio runtime serves the process ([`runtime`]); every wait releases
//! the GIL and checks for Ctrl-C every 100 ms.

use pyo3::prelude::*;

pub mod client;
pub mod errors;
pub mod item;
pub mod prov;
pub mod runtime;
pub mod stream;
pub mod view;

/// A serde value as plain Python values (dicts, lists, str, numbers),
/// through JSON: reports and provenance answers reach Python in the same
/// shape as the command line's `--json`.
pub(crate) fn to_py<'py, T: serde::Serialize>(
    py: Python<'py>,
    v: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| errors::DiasporaError::new_err(format!("encoding an answer: {e}")))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// The `pydiaspora._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::init_async();
    errors::register(m)?;
    m.add_class::<client::Node>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::Producer>()?;
    m.add_class::<client::Delivery>()?;
    m.add_class::<client::Delivered>()?;
    m.add_class::<client::Consumer>()?;
    m.add_class::<item::Item>()?;
    m.add_class::<item::Payload>()?;
    m.add_class::<prov::Provenance>()?;
    m.add_class::<stream::StreamProducer>()?;
    m.add_class::<stream::StreamConsumer>()?;
    m.add_class::<stream::StreamItem>()?;
    m.add_class::<view::View>()?;
    m.add_class::<view::ViewItem>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
