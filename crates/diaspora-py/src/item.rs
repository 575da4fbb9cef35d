//! Items between Python and the fabric: building one from Python values
//! (bytes-like objects and NumPy arrays), and a consumed item whose payload
//! Python reads without a copy.

use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use bytes::Bytes;
use diaspora_fabric::item::{meta, now_us, ConsumedItem, ItemRef};
use diaspora_proto::v1::{self, value::Kind};
use diaspora_stream::ndarray::{
    array_meta, dtype_size, tag_array, DTYPE_KEY, MAX_AXIS_LEN, MAX_DIMS,
};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{ArrayError, InvalidRequest};

/// Element types of array items: (diaspora name, NumPy type string).
const DTYPES: [(&str, &str); 10] = [
    ("u8", "<u1"),
    ("u16", "<u2"),
    ("u32", "<u4"),
    ("u64", "<u8"),
    ("i8", "<i1"),
    ("i16", "<i2"),
    ("i32", "<i4"),
    ("i64", "<i8"),
    ("f32", "<f4"),
    ("f64", "<f8"),
];

/// The diaspora dtype name of a NumPy dtype (`kind` + item size), if it has one.
fn dtype_name(kind: &str, itemsize: usize) -> Option<&'static str> {
    let np = format!("<{kind}{itemsize}");
    DTYPES.iter().find(|(_, n)| *n == np).map(|(d, _)| *d)
}

/// The NumPy type string of a diaspora dtype name.
fn numpy_dtype(name: &str) -> Option<&'static str> {
    DTYPES.iter().find(|(d, _)| *d == name).map(|(_, n)| *n)
}

/// A read-only view of an item's payload that exports the buffer protocol:
/// `memoryview(p)`, `bytes(p)` and `numpy.frombuffer(p, ...)` read the bytes
/// the fabric received, without copying them.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Payload {
    bytes: Bytes,
}

#[pymethods]
impl Payload {
    /// The address of the first byte (what a zero-copy NumPy array points at).
    #[getter]
    fn address(&self) -> usize {
        self.bytes.as_ptr() as usize
    }

    fn __len__(&self) -> usize {
        self.bytes.len()
    }

    fn __repr__(&self) -> String {
        format!("<Payload {} bytes>", self.bytes.len())
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "an item's payload is read-only (copy it to change it, e.g. numpy.array(...))",
            ));
        }
        let b = &slf.get().bytes;
        // SAFETY: the Bytes lives as long as `slf`, which the view holds a
        // reference to (PyBuffer_FillInfo increments it), and is never mutated.
        let r = ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            b.as_ptr() as *mut c_void,
            b.len() as ffi::Py_ssize_t,
            1,
            flags,
        );
        if r == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// An item read from a topic.
#[pyclass(module = "pydiaspora._native", frozen)]
pub struct Item {
    topic: Arc<str>,
    partition: u32,
    offset: u64,
    item: v1::Item,
    payload_bytes: u64,
}

impl Item {
    pub fn new(c: ConsumedItem) -> Item {
        Item {
            topic: c.topic,
            partition: c.partition,
            offset: c.offset,
            item: c.item,
            payload_bytes: c.payload_bytes,
        }
    }

    pub fn item_ref(&self) -> ItemRef {
        ItemRef::new(self.topic.clone(), self.partition, self.offset)
    }
}

#[pymethods]
impl Item {
    /// Topic.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition.
    #[getter]
    fn partition(&self) -> u32 {
        self.partition
    }

    /// Offset in the partition.
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// Where it lives, `topic/partition/offset` (what provenance calls it).
    #[getter(r#ref)]
    fn location(&self) -> String {
        self.item_ref().to_string()
    }

    /// The payload, without a copy (see `Payload`).
    #[getter]
    fn payload(&self) -> Payload {
        Payload {
            bytes: self.item.payload.clone(),
        }
    }

    /// Length of the payload in bytes (also for a metadata-only read).
    #[getter]
    fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The payload as `bytes` (a copy).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.item.payload)
    }

    /// Metadata values: str, int, float, bool or bytes.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.item.metadata {
            let v: Bound<'py, PyAny> = match &v.kind {
                Some(Kind::S(s)) => PyString::new(py, s).into_any(),
                Some(Kind::I(i)) => i.into_pyobject(py)?.into_any(),
                Some(Kind::F(f)) => f.into_pyobject(py)?.into_any(),
                Some(Kind::B(b)) => PyBool::new(py, *b).to_owned().into_any(),
                Some(Kind::Raw(r)) => PyBytes::new(py, r).into_any(),
                None => py.None().into_bound(py),
            };
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Headers (str to str).
    #[getter]
    fn headers(&self) -> HashMap<String, String> {
        self.item
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The routing key, or None.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        (!self.item.key.is_empty()).then(|| PyBytes::new(py, &self.item.key))
    }

    /// The producer's timestamp, µs since the Unix epoch.
    #[getter]
    fn timestamp_us(&self) -> i64 {
        self.item.timestamp_us
    }

    /// The items it was derived from, as `topic/partition/offset`.
    #[getter]
    fn sources(&self) -> Vec<String> {
        self.item
            .lineage
            .as_ref()
            .map(|l| {
                l.sources
                    .iter()
                    .map(|s| format!("{}/{}/{}", s.topic, s.partition, s.offset))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The activity that derived it, or None.
    #[getter]
    fn activity(&self) -> Option<String> {
        self.item
            .lineage
            .as_ref()
            .filter(|l| !l.activity.is_empty())
            .map(|l| l.activity.clone())
    }

    /// Model versions involved in making it, e.g. `surrogate@17`.
    #[getter]
    fn model_versions(&self) -> Vec<String> {
        self.item
            .lineage
            .as_ref()
            .map(|l| l.model_versions.clone())
            .unwrap_or_default()
    }

    /// Whether the item carries an array (`ndarray.dtype` metadata).
    #[getter]
    fn is_array(&self) -> bool {
        self.item.metadata.contains_key(DTYPE_KEY)
    }

    /// The payload as a read-only NumPy array with the dtype and shape of
    /// its metadata. No copy: the array points at the received bytes
    /// (NumPy reads unaligned data too, more slowly; `numpy.array(a)`
    /// makes an aligned, writable copy).
    fn array<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let it = &self.item;
        let (dtype, shape) = array_meta(it).map_err(|e| ArrayError::new_err(e.to_string()))?;
        let (Some(np_dtype), Some(elem)) = (numpy_dtype(&dtype), dtype_size(&dtype)) else {
            return Err(ArrayError::new_err(format!(
                "dtype {dtype:?} has no NumPy equivalent here"
            )));
        };
        let want = shape
            .iter()
            .try_fold(elem, |a, &n| a.checked_mul(n))
            .ok_or_else(|| ArrayError::new_err(format!("shape {shape:?} overflows")))?;
        if want != it.payload.len() {
            return Err(ArrayError::new_err(format!(
                "payload holds {} bytes; {dtype} {shape:?} needs {want}",
                it.payload.len()
            )));
        }
        let np = py.import("numpy")?;
        let flat = np.call_method1("frombuffer", (self.payload(), np_dtype))?;
        flat.call_method1("reshape", (PyTuple::new(py, shape)?,))
    }

    fn __len__(&self) -> usize {
        self.item.payload.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<Item {}/{}/{} {} bytes>",
            self.topic, self.partition, self.offset, self.payload_bytes
        )
    }
}

/// An array payload's dtype name and shape.
type ArrayShape = (&'static str, Vec<usize>);

/// What a producer is asked to send, besides the payload: the keyword
/// arguments every send method takes (`metadata`, `headers`, `key`,
/// `sources`, `activity`, `model_versions`, `timestamp_us`).
#[derive(Default)]
pub struct Extras<'py> {
    pub metadata: Option<Bound<'py, PyDict>>,
    pub headers: Option<HashMap<String, String>>,
    pub key: Option<Bound<'py, PyAny>>,
    pub sources: Option<Bound<'py, PyAny>>,
    pub activity: Option<String>,
    pub model_versions: Option<Vec<String>>,
    pub timestamp_us: Option<i64>,
}

/// The keyword arguments of the send methods, for their `text_signature`.
pub const SEND_KEYWORDS: &str = "metadata=None, headers=None, key=None, sources=None, \
     activity=None, model_versions=None, timestamp_us=None";

impl<'py> Extras<'py> {
    /// Reads the send keywords from `kw`, refusing any other: a method
    /// takes its own keywords (e.g. `partition`) out of `kw` first.
    pub fn from_kwargs(kw: Option<&Bound<'py, PyDict>>) -> PyResult<Extras<'py>> {
        let mut x = Extras::default();
        let Some(kw) = kw else { return Ok(x) };
        for (k, v) in kw.iter() {
            let k: String = k.extract()?;
            if v.is_none() {
                continue;
            }
            let bad = |what: &str| InvalidRequest::new_err(format!("{k} must be {what}"));
            match k.as_str() {
                "metadata" => x.metadata = Some(v.downcast_into().map_err(|_| bad("a dict"))?),
                "headers" => {
                    x.headers = Some(v.extract().map_err(|_| bad("a dict of str to str"))?)
                }
                "key" => x.key = Some(v),
                "sources" => x.sources = Some(v),
                "activity" => x.activity = Some(v.extract().map_err(|_| bad("a str"))?),
                "model_versions" => {
                    x.model_versions = Some(v.extract().map_err(|_| bad("a list of str"))?)
                }
                "timestamp_us" => x.timestamp_us = Some(v.extract().map_err(|_| bad("an int"))?),
                _ => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "unexpected keyword argument {k:?} (the send keywords are {SEND_KEYWORDS})"
                    )))
                }
            }
        }
        Ok(x)
    }
}

/// Takes keyword `name` out of `kw`, if there.
pub fn take_kwarg<'py, T: FromPyObject<'py>>(
    kw: Option<&Bound<'py, PyDict>>,
    name: &str,
) -> PyResult<Option<T>> {
    let Some(kw) = kw else { return Ok(None) };
    let Some(v) = kw.get_item(name)? else {
        return Ok(None);
    };
    kw.del_item(name)?;
    if v.is_none() {
        return Ok(None);
    }
    v.extract()
        .map(Some)
        .map_err(|e| InvalidRequest::new_err(format!("{name}: {e}")))
}

/// A raw pointer and length the GIL-free copy reads (the buffer view it
/// came from is held until the copy is done).
struct RawBuf(*const u8, usize);
// SAFETY: only read, while the exporting object's buffer view is held.
unsafe impl Send for RawBuf {}

/// Payloads larger than this are copied with the GIL released.
const COPY_WITHOUT_GIL: usize = 64 << 10;

/// Copies the bytes of any C-contiguous buffer-protocol object.
fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let py = obj.py();
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: a Py_buffer filled by PyObject_GetBuffer is released below on
    // every path; its memory is only read while the view is held.
    unsafe {
        if ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS) == -1 {
            return Err(PyErr::fetch(py));
        }
        let mut view = view.assume_init();
        let raw = RawBuf(view.buf as *const u8, view.len.max(0) as usize);
        let copy = move || {
            let raw = raw;
            Bytes::copy_from_slice(std::slice::from_raw_parts(raw.0, raw.1))
        };
        let out = if view.len as usize > COPY_WITHOUT_GIL {
            py.allow_threads(copy)
        } else {
            copy()
        };
        ffi::PyBuffer_Release(&mut view);
        Ok(out)
    }
}

/// The payload of `obj` and, for a NumPy array, its dtype and shape:
/// bytes-like objects are taken as they are, a `str` as UTF-8, `None` as
/// empty, and an array in little-endian C order (others are converted
/// with one copy).
fn payload_of(obj: &Bound<'_, PyAny>) -> PyResult<(Bytes, Option<ArrayShape>)> {
    let py = obj.py();
    if obj.is_none() {
        return Ok((Bytes::new(), None));
    }
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return Ok((Bytes::copy_from_slice(b.as_bytes()), None));
    }
    if let Ok(s) = obj.downcast::<PyString>() {
        return Ok((Bytes::copy_from_slice(s.to_str()?.as_bytes()), None));
    }
    if obj.hasattr("__array_interface__")? && obj.hasattr("dtype")? {
        let np = py.import("numpy")?;
        let mut arr = obj.clone();
        let dt = arr.getattr("dtype")?;
        let kind: String = dt.getattr("kind")?.extract()?;
        let size: usize = dt.getattr("itemsize")?.extract()?;
        let Some(name) = dtype_name(&kind, size) else {
            let shown: String = dt.str()?.extract()?;
            return Err(ArrayError::new_err(format!(
                "NumPy dtype {shown} cannot travel as an array item; use one of \
                 uint8/16/32/64, int8/16/32/64, float32/64"
            )));
        };
        let order: String = dt.getattr("byteorder")?.extract()?;
        let contiguous: bool = arr.getattr("flags")?.get_item("C_CONTIGUOUS")?.extract()?;
        if order == ">" || !contiguous {
            let le = numpy_dtype(name).expect("every name has a NumPy type");
            arr = np.call_method1("ascontiguousarray", (arr, le))?;
        }
        let shape: Vec<usize> = arr.getattr("shape")?.extract()?;
        if shape.len() > MAX_DIMS || shape.iter().any(|&n| n as u64 > MAX_AXIS_LEN) {
            return Err(ArrayError::new_err(format!(
                "array of shape {shape:?}: at most {MAX_DIMS} axes of at most {MAX_AXIS_LEN} each"
            )));
        }
        return Ok((buffer_bytes(&arr)?, Some((name, shape))));
    }
    match buffer_bytes(obj) {
        Ok(b) => Ok((b, None)),
        Err(_) => Err(InvalidRequest::new_err(format!(
            "a payload is bytes, a bytes-like object, a str, a NumPy array or None, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// One metadata value from Python.
fn meta_value(v: &Bound<'_, PyAny>) -> PyResult<v1::Value> {
    if v.is_instance_of::<PyBool>() {
        return Ok(meta::boolean(v.extract()?));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(meta::int(v.extract()?));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(meta::float(v.extract()?));
    }
    if let Ok(s) = v.downcast::<PyString>() {
        return Ok(meta::string(s.to_str()?));
    }
    if let Ok(b) = v.downcast::<PyBytes>() {
        return Ok(meta::raw(Bytes::copy_from_slice(b.as_bytes())));
    }
    Err(InvalidRequest::new_err(format!(
        "a metadata value is str, int, float, bool or bytes, not {}",
        v.get_type().name()?
    )))
}

/// A source location from Python: an `Item` or `topic/partition/offset`.
fn source_ref(v: &Bound<'_, PyAny>) -> PyResult<v1::ItemRef> {
    let r = if let Ok(it) = v.downcast::<Item>() {
        it.get().item_ref()
    } else {
        let s: String = v.extract().map_err(|_| {
            InvalidRequest::new_err("a source is an Item or a 'topic/partition/offset' string")
        })?;
        ItemRef::parse(&s).ok_or_else(|| {
            InvalidRequest::new_err(format!("source {s:?} is not topic/partition/offset"))
        })?
    };
    Ok(v1::ItemRef {
        topic: r.topic.to_string(),
        partition: r.partition,
        offset: r.offset,
    })
}

/// Builds the item a producer sends.
pub fn build(payload: &Bound<'_, PyAny>, x: Extras<'_>) -> PyResult<v1::Item> {
    let (payload, array) = payload_of(payload)?;
    let mut item = v1::Item {
        payload,
        timestamp_us: x.timestamp_us.unwrap_or_else(now_us),
        ..Default::default()
    };
    if let Some(md) = &x.metadata {
        for (k, v) in md.iter() {
            let k: String = k
                .extract()
                .map_err(|_| InvalidRequest::new_err("metadata keys are str"))?;
            item.metadata.insert(k, meta_value(&v)?);
        }
    }
    if let Some((dtype, shape)) = array {
        // Checked above: at most MAX_DIMS axes of at most MAX_AXIS_LEN.
        tag_array(&mut item, dtype, &shape);
    }
    if let Some(h) = x.headers {
        item.headers.extend(h);
    }
    if let Some(k) = &x.key {
        if let Ok(s) = k.downcast::<PyString>() {
            item.key = Bytes::copy_from_slice(s.to_str()?.as_bytes());
        } else {
            item.key = buffer_bytes(k)?;
        }
    }
    let sources = match &x.sources {
        None => Vec::new(),
        Some(s) if s.is_instance_of::<PyString>() || s.is_instance_of::<Item>() => {
            vec![source_ref(s)?]
        }
        Some(s) => s
            .try_iter()?
            .map(|v| source_ref(&v?))
            .collect::<PyResult<_>>()?,
    };
    if !sources.is_empty() || x.activity.is_some() || x.model_versions.is_some() {
        item.lineage = Some(v1::Lineage {
            sources,
            model_versions: x.model_versions.unwrap_or_default(),
            activity: x.activity.unwrap_or_default(),
        });
    }
    Ok(item)
}

/// `Item`s as a Python list.
pub fn items_list<'py>(py: Python<'py>, items: Vec<ConsumedItem>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, items.into_iter().map(Item::new))
}
