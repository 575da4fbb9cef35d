//! Items that carry n-dimensional arrays (detector frames and the like).
//!
//! An array item has a raw little-endian payload holding the elements in
//! standard (row-major, C-contiguous) order, and two metadata entries:
//!
//! * [`DTYPE_KEY`] (`"ndarray.dtype"`): the element type as a string, e.g.
//!   `"u16"` (see [`Element::DTYPE`]);
//! * [`SHAPE_KEY`] (`"ndarray.shape"`): the axis lengths, comma separated,
//!   e.g. `"1030,514"` (an empty string is a 0-dimensional array holding one
//!   element).
//!
//! Both are [`Value`]s of the string kind. The helpers avoid copies wherever
//! the memory layout allows it:
//!
//! * [`array_item`] moves an owned array in standard layout into the payload
//!   without copying it (the array's buffer becomes the payload);
//! * [`item_array_view`] borrows the payload as an array when its address is
//!   aligned for the element type, and [`item_array`] falls back to one copy
//!   when it is not.
//!
//! Shape metadata comes from the network, so reading it never panics: at most
//! [`MAX_DIMS`] axes, each at most [`MAX_AXIS_LEN`] long, and every size
//! computation is checked.
//!
//! Payloads are little-endian; this module refuses to build for big-endian
//! targets rather than silently produce byte-swapped frames.

use std::borrow::Cow;

use ::ndarray::{Array, ArrayView, ArrayViewD, CowArray, Dimension, IxDyn};
use bytes::Bytes;
use diaspora_fabric::item::meta;
use diaspora_proto::v1::{value::Kind, Item, Value};

#[cfg(target_endian = "big")]
compile_error!(
    "diaspora_stream::ndarray assumes a little-endian host: array payloads are little-endian"
);

/// Metadata key holding the element type of an array item (a string value).
pub const DTYPE_KEY: &str = "ndarray.dtype";

/// Metadata key holding the shape of an array item: axis lengths as a
/// comma-separated string value, e.g. `"1030,514"`.
pub const SHAPE_KEY: &str = "ndarray.shape";

/// Most axes an array item may have.
pub const MAX_DIMS: usize = 8;

/// Longest an axis of an array item may be (2⁴⁰ elements).
pub const MAX_AXIS_LEN: u64 = 1 << 40;

/// Element types that can travel as array payloads (little-endian, plain old data).
///
/// Implemented for `u8`, `u16`, `u32`, `u64`, `i8`, `i16`, `i32`, `i64`,
/// `f32` and `f64`. Other implementations must not be zero-sized, and their
/// [`DTYPE`](Element::DTYPE) must not collide with the built-in names.
pub trait Element: bytemuck::Pod + Copy + Send + Sync + 'static {
    /// Name of the type in the [`DTYPE_KEY`] metadata, e.g. `"u16"`.
    const DTYPE: &'static str;
}

macro_rules! element {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl Element for $t {
            const DTYPE: &'static str = $name;
        })*

        /// Size in bytes of one element of a built-in dtype, `None` for other names.
        ///
        /// ```
        /// assert_eq!(diaspora_stream::ndarray::dtype_size("u16"), Some(2));
        /// assert_eq!(diaspora_stream::ndarray::dtype_size("c64"), None);
        /// ```
        pub fn dtype_size(dtype: &str) -> Option<usize> {
            match dtype {
                $($name => Some(std::mem::size_of::<$t>()),)*
                _ => None,
            }
        }
    };
}

element! {
    u8 => "u8",
    u16 => "u16",
    u32 => "u32",
    u64 => "u64",
    i8 => "i8",
    i16 => "i16",
    i32 => "i32",
    i64 => "i64",
    f32 => "f32",
    f64 => "f64",
}

/// Why an item could not be read (or combined) as an array.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArrayError {
    /// The item has no [`DTYPE_KEY`] metadata.
    #[error("item is not an array: no `{DTYPE_KEY}` metadata")]
    NotAnArray,
    /// The [`DTYPE_KEY`] metadata is not a non-empty string.
    #[error("bad `{DTYPE_KEY}` metadata: {0}")]
    BadDtype(String),
    /// The item holds another element type than the one asked for.
    #[error("dtype mismatch: expected {expected}, found {found}")]
    DtypeMismatch {
        /// The dtype asked for (or, when combining items, the first item's).
        expected: String,
        /// The dtype the item holds.
        found: String,
    },
    /// The [`SHAPE_KEY`] metadata is missing or malformed, or its size overflows.
    #[error("bad `{SHAPE_KEY}` metadata: {0}")]
    BadShape(String),
    /// The shape has more than [`MAX_DIMS`] axes.
    #[error("array has {dims} axes; at most {limit} are allowed")]
    TooManyDims {
        /// Axes in the shape.
        dims: usize,
        /// The limit, [`MAX_DIMS`].
        limit: usize,
    },
    /// The payload length is not the shape's element count × the element size.
    #[error(
        "payload is {payload} bytes but shape {shape:?} of {elem_size}-byte elements needs {expected}"
    )]
    SizeMismatch {
        /// The shape from the metadata.
        shape: Vec<usize>,
        /// Size in bytes of one element.
        elem_size: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes the payload has.
        payload: usize,
    },
    /// The payload's address is not aligned for the element type, so it cannot
    /// be borrowed as an array; [`item_array`] copies it instead.
    #[error("payload at address {addr:#x} is not aligned to {align} bytes")]
    Unaligned {
        /// Required alignment in bytes.
        align: usize,
        /// Address of the payload.
        addr: usize,
    },
    /// Two items to combine have different shapes.
    #[error("shape mismatch: {a:?} vs {b:?}")]
    ShapeMismatch {
        /// Shape of the first item.
        a: Vec<usize>,
        /// Shape of the second item.
        b: Vec<usize>,
    },
    /// The operation does not support this dtype.
    #[error("unsupported dtype {0:?} for this operation")]
    UnsupportedDtype(String),
    /// An interpolation weight outside `[0, 1]` (or NaN).
    #[error("interpolation weight {0} is not in [0, 1]")]
    BadWeight(f64),
}

/// Builds an item from an owned array, **without copying** the elements when
/// the array is in standard (C-contiguous, row-major) layout: the array's
/// buffer becomes the payload. An array in another layout (transposed,
/// strided, Fortran order) is copied once into standard order.
///
/// The item carries only the [`DTYPE_KEY`] and [`SHAPE_KEY`] metadata; set
/// any other field on the returned value.
///
/// ```
/// use diaspora_stream::ndarray::{array_item, item_array, item_array_view};
///
/// let frame = ndarray::Array2::<u16>::from_shape_fn((4, 3), |(r, c)| (r * 10 + c) as u16);
/// let item = array_item(frame.clone());
/// assert_eq!(item.payload.len(), 4 * 3 * 2);
///
/// // Borrow the payload back as an array (falls back to a copy if misaligned).
/// let back = item_array::<u16>(&item).unwrap();
/// assert_eq!(back.shape(), &[4, 3]);
/// assert_eq!(back, frame.into_dyn());
///
/// // No copy on the way in: the payload is the array's buffer.
/// let original = ndarray::Array2::<u16>::zeros((4, 3));
/// let data = original.as_ptr() as *const u8;
/// let item = array_item(original);
/// assert_eq!(item.payload.as_ptr(), data);
/// let view = item_array_view::<u16>(&item).unwrap();
/// assert_eq!(view.as_ptr() as *const u8, data);
/// ```
///
/// # Panics
///
/// If the array has more than [`MAX_DIMS`] axes or an axis longer than
/// [`MAX_AXIS_LEN`] (readers would refuse the item).
pub fn array_item<T: Element, D: Dimension>(a: Array<T, D>) -> Item {
    let shape = a.shape().to_vec();
    let payload = if a.is_standard_layout() {
        let len = a.len();
        let (vec, offset) = a.into_raw_vec_and_offset();
        match offset {
            Some(start) if len > 0 => Bytes::from_owner(PodOwner { vec, start, len }),
            _ => Bytes::new(),
        }
    } else {
        vec_bytes(a.iter().copied().collect())
    };
    build_item(T::DTYPE, &shape, payload)
}

/// Builds an item from an array view, copying the elements once into the
/// payload (in standard order, whatever the view's layout).
///
/// ```
/// use diaspora_stream::ndarray::{array_view_item, item_array};
///
/// let a = ndarray::Array2::<f32>::from_shape_fn((2, 3), |(r, c)| (r * 3 + c) as f32);
/// let item = array_view_item(a.t()); // the transposed 3×2 array
/// let back = item_array::<f32>(&item).unwrap();
/// assert_eq!(back.shape(), &[3, 2]);
/// assert_eq!(back, a.t().into_dyn());
/// ```
///
/// # Panics
///
/// Like [`array_item`], if the shape exceeds [`MAX_DIMS`] or [`MAX_AXIS_LEN`].
pub fn array_view_item<T: Element, D: Dimension>(a: ArrayView<'_, T, D>) -> Item {
    let payload = match a.as_slice() {
        Some(s) => Bytes::copy_from_slice(bytemuck::cast_slice(s)),
        None => vec_bytes(a.iter().copied().collect()),
    };
    build_item(T::DTYPE, a.shape(), payload)
}

/// Sets the [`DTYPE_KEY`] and [`SHAPE_KEY`] metadata on an item whose payload
/// already holds the raw little-endian elements in standard order (e.g. a
/// detector buffer). Other metadata is left alone; the payload is not checked
/// (readers check it against the shape).
///
/// ```
/// use diaspora_stream::ndarray::{array_meta, tag_array};
///
/// let mut item = diaspora_fabric::item::payload_item(bytes::Bytes::from(vec![0u8; 2 * 4 * 2]));
/// tag_array(&mut item, "u16", &[2, 4]);
/// assert_eq!(array_meta(&item).unwrap(), ("u16".to_string(), vec![2, 4]));
/// ```
///
/// # Panics
///
/// If `shape` has more than [`MAX_DIMS`] axes or an axis longer than
/// [`MAX_AXIS_LEN`].
pub fn tag_array(item: &mut Item, dtype: &str, shape: &[usize]) {
    let shape = format_shape(shape);
    item.metadata
        .insert(DTYPE_KEY.to_string(), meta::string(dtype));
    item.metadata
        .insert(SHAPE_KEY.to_string(), meta::string(&shape));
}

/// Reads the dtype and shape metadata of an array item.
///
/// Checks only the metadata itself (the payload is checked by the readers,
/// which know the element size).
///
/// ```
/// use diaspora_stream::ndarray::{array_item, array_meta, ArrayError};
///
/// let item = array_item(ndarray::Array3::<f32>::zeros((2, 3, 4)));
/// assert_eq!(array_meta(&item).unwrap(), ("f32".to_string(), vec![2, 3, 4]));
/// let plain = diaspora_fabric::item::Item::default();
/// assert_eq!(array_meta(&plain), Err(ArrayError::NotAnArray));
/// ```
///
/// # Errors
///
/// [`ArrayError::NotAnArray`] without dtype metadata, [`ArrayError::BadDtype`]
/// when it is not a non-empty string, [`ArrayError::BadShape`] or
/// [`ArrayError::TooManyDims`] when the shape is missing or malformed.
pub fn array_meta(item: &Item) -> Result<(String, Vec<usize>), ArrayError> {
    let dtype = match item.metadata.get(DTYPE_KEY) {
        None => return Err(ArrayError::NotAnArray),
        Some(Value {
            kind: Some(Kind::S(s)),
        }) if !s.is_empty() => s.clone(),
        Some(v) => {
            return Err(ArrayError::BadDtype(format!(
                "expected a non-empty string, found {}",
                describe(v)
            )))
        }
    };
    let shape = match item.metadata.get(SHAPE_KEY) {
        Some(Value {
            kind: Some(Kind::S(s)),
        }) => parse_shape(s)?,
        Some(v) => {
            return Err(ArrayError::BadShape(format!(
                "expected a string, found {}",
                describe(v)
            )))
        }
        None => return Err(ArrayError::BadShape("missing".to_string())),
    };
    Ok((dtype, shape))
}

/// Borrows the payload as an array, **without copying**, when the payload's
/// address is aligned for `T` (it usually is: payloads are slices of fetched
/// batches and of buffers allocated for `T`).
///
/// ```
/// use diaspora_stream::ndarray::{array_item, item_array_view};
///
/// let item = array_item(ndarray::Array2::<u16>::ones((3, 5)));
/// let view = item_array_view::<u16>(&item).unwrap();
/// assert_eq!(view.shape(), &[3, 5]);
/// assert_eq!(view.as_ptr() as *const u8, item.payload.as_ptr());
/// ```
///
/// # Errors
///
/// The metadata errors of [`array_meta`], [`ArrayError::DtypeMismatch`] when
/// the item holds another dtype than `T`, [`ArrayError::SizeMismatch`] when the
/// payload length does not match the shape, and [`ArrayError::Unaligned`] when
/// the payload cannot be borrowed; use [`item_array`] for the copying fallback.
pub fn item_array_view<T: Element>(item: &Item) -> Result<ArrayViewD<'_, T>, ArrayError> {
    let shape = checked_meta::<T>(item)?;
    let slice = aligned_slice::<T>(&item.payload)?;
    view_of(&shape, slice)
}

/// The payload as an array: borrowed without copying when the payload is
/// aligned for `T` (see [`item_array_view`]), otherwise copied once into an
/// owned array.
///
/// ```
/// use diaspora_stream::ndarray::{array_item, item_array};
///
/// let a = ndarray::Array1::<f64>::linspace(0.0, 1.0, 5);
/// let item = array_item(a.clone());
/// let back = item_array::<f64>(&item).unwrap();
/// assert!(back.is_view()); // aligned: borrowed
/// assert_eq!(back, a.into_dyn());
/// ```
///
/// # Errors
///
/// As [`item_array_view`], except that a misaligned payload is not an error.
pub fn item_array<T: Element>(item: &Item) -> Result<CowArray<'_, T, IxDyn>, ArrayError> {
    let shape = checked_meta::<T>(item)?;
    match payload_elements::<T>(&item.payload) {
        Cow::Borrowed(slice) => Ok(CowArray::from(view_of(&shape, slice)?)),
        Cow::Owned(vec) => Array::from_shape_vec(IxDyn(&shape), vec)
            .map(CowArray::from)
            .map_err(|e| ArrayError::BadShape(format!("{shape:?}: {e}"))),
    }
}

/// Linear interpolation between two array items of the same dtype and shape,
/// to reconstruct a missing frame: `a + w·(b − a)` per element, computed in
/// `f64`, rounded to the nearest integer (halves away from zero) for integer
/// dtypes.
///
/// `w = 0` gives `a`'s payload and `w = 1` gives `b`'s, exactly and without
/// copying; integer results always lie between the two inputs.
///
/// The returned item carries only the [`DTYPE_KEY`] and [`SHAPE_KEY`] metadata
/// (set its quality, lineage and timestamp as needed). Supported dtypes: `u8`,
/// `u16`, `u32`, `i8`, `i16`, `i32`, `f32`, `f64` (not the 64-bit integers,
/// which `f64` cannot hold exactly).
///
/// ```
/// use diaspora_stream::ndarray::{array_item, interpolate_items, item_array};
///
/// let a = array_item(ndarray::arr1(&[0u16, 10, 100]));
/// let b = array_item(ndarray::arr1(&[10u16, 10, 0]));
/// let mid = interpolate_items(&a, &b, 0.25).unwrap();
/// assert_eq!(item_array::<u16>(&mid).unwrap(), ndarray::arr1(&[3u16, 10, 75]).into_dyn());
/// ```
///
/// # Errors
///
/// The metadata and size errors of [`item_array`] for either item,
/// [`ArrayError::DtypeMismatch`] / [`ArrayError::ShapeMismatch`] when the items
/// differ, [`ArrayError::UnsupportedDtype`], and [`ArrayError::BadWeight`] when
/// `w` is not in `[0, 1]`.
pub fn interpolate_items(a: &Item, b: &Item, w: f64) -> Result<Item, ArrayError> {
    if !(0.0..=1.0).contains(&w) {
        return Err(ArrayError::BadWeight(w));
    }
    let (dtype_a, shape_a) = array_meta(a)?;
    let (dtype_b, shape_b) = array_meta(b)?;
    if dtype_a != dtype_b {
        return Err(ArrayError::DtypeMismatch {
            expected: dtype_a,
            found: dtype_b,
        });
    }
    if shape_a != shape_b {
        return Err(ArrayError::ShapeMismatch {
            a: shape_a,
            b: shape_b,
        });
    }
    let payload = match dtype_a.as_str() {
        "u8" => lerp_payloads::<u8>(a, b, &shape_a, w)?,
        "u16" => lerp_payloads::<u16>(a, b, &shape_a, w)?,
        "u32" => lerp_payloads::<u32>(a, b, &shape_a, w)?,
        "i8" => lerp_payloads::<i8>(a, b, &shape_a, w)?,
        "i16" => lerp_payloads::<i16>(a, b, &shape_a, w)?,
        "i32" => lerp_payloads::<i32>(a, b, &shape_a, w)?,
        "f32" => lerp_payloads::<f32>(a, b, &shape_a, w)?,
        "f64" => lerp_payloads::<f64>(a, b, &shape_a, w)?,
        _ => return Err(ArrayError::UnsupportedDtype(dtype_a)),
    };
    Ok(build_item(&dtype_a, &shape_a, payload))
}

/// Parses a [`SHAPE_KEY`] value: decimal axis lengths separated by commas,
/// blanks around them allowed; an empty (or blank) string is the shape of a
/// 0-dimensional array. Never panics.
///
/// ```
/// use diaspora_stream::ndarray::parse_shape;
///
/// assert_eq!(parse_shape("1030, 514").unwrap(), vec![1030, 514]);
/// assert_eq!(parse_shape("").unwrap(), Vec::<usize>::new());
/// assert!(parse_shape("1030,-1").is_err());
/// assert!(parse_shape("1,2,3,4,5,6,7,8,9").is_err());
/// ```
///
/// # Errors
///
/// [`ArrayError::TooManyDims`] beyond [`MAX_DIMS`] axes; [`ArrayError::BadShape`]
/// for anything that is not a decimal length, an axis longer than
/// [`MAX_AXIS_LEN`], or an element count that overflows.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, ArrayError> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut dims = Vec::new();
    for (axis, part) in trimmed.split(',').enumerate() {
        if axis >= MAX_DIMS {
            return Err(ArrayError::TooManyDims {
                dims: trimmed.split(',').count(),
                limit: MAX_DIMS,
            });
        }
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ArrayError::BadShape(format!(
                "axis {axis}: {:?} is not a decimal length (shape {:?})",
                clip(part),
                clip(s)
            )));
        }
        let len = part
            .parse::<u64>()
            .ok()
            .filter(|&n| n <= MAX_AXIS_LEN)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                ArrayError::BadShape(format!(
                    "axis {axis}: length {} exceeds {MAX_AXIS_LEN}",
                    clip(part)
                ))
            })?;
        dims.push(len);
    }
    element_count(&dims)?;
    Ok(dims)
}

/// Formats a shape as a [`SHAPE_KEY`] value, e.g. `"1030,514"`.
///
/// ```
/// assert_eq!(diaspora_stream::ndarray::format_shape(&[1030, 514]), "1030,514");
/// ```
///
/// # Panics
///
/// If `shape` has more than [`MAX_DIMS`] axes or an axis longer than
/// [`MAX_AXIS_LEN`]: such a shape would be refused by [`parse_shape`].
pub fn format_shape(shape: &[usize]) -> String {
    assert!(
        shape.len() <= MAX_DIMS,
        "array items have at most {MAX_DIMS} axes, this one has {}",
        shape.len()
    );
    assert!(
        shape.iter().all(|&n| n as u64 <= MAX_AXIS_LEN),
        "array item axes are at most {MAX_AXIS_LEN} long: {shape:?}"
    );
    let mut out = String::with_capacity(shape.len() * 6);
    for (i, n) in shape.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&n.to_string());
    }
    out
}

// ---------------------------------------------------------------------------
// Internals.

/// Owner of a standard-layout element buffer whose bytes are a payload:
/// `vec[start..start + len]` are the array's elements.
struct PodOwner<T> {
    vec: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Element> AsRef<[u8]> for PodOwner<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.vec[self.start..self.start + self.len])
    }
}

/// A payload owning `vec` (no copy).
fn vec_bytes<T: Element>(vec: Vec<T>) -> Bytes {
    if vec.is_empty() {
        return Bytes::new();
    }
    let len = vec.len();
    Bytes::from_owner(PodOwner { vec, start: 0, len })
}

fn build_item(dtype: &str, shape: &[usize], payload: Bytes) -> Item {
    let mut item = Item {
        payload,
        ..Default::default()
    };
    tag_array(&mut item, dtype, shape);
    item
}

/// Kind of a metadata value, for error messages.
fn describe(v: &Value) -> String {
    match &v.kind {
        None => "an empty value".to_string(),
        Some(Kind::S(s)) if s.is_empty() => "an empty string".to_string(),
        Some(Kind::S(s)) => format!("string {:?}", clip(s)),
        Some(Kind::I(i)) => format!("integer {i}"),
        Some(Kind::F(f)) => format!("float {f}"),
        Some(Kind::B(b)) => format!("bool {b}"),
        Some(Kind::Raw(r)) => format!("{} raw bytes", r.len()),
    }
}

/// At most 64 characters of `s`, for error messages about untrusted input.
fn clip(s: &str) -> Cow<'_, str> {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// Number of elements of `shape`, checked against overflow (of the element
/// count, and of the count of the non-empty axes, which `ndarray` needs to fit
/// in `isize` even when another axis is empty).
fn element_count(shape: &[usize]) -> Result<usize, ArrayError> {
    let overflow = || ArrayError::BadShape(format!("element count of {shape:?} overflows"));
    let nonzero = shape
        .iter()
        .filter(|&&n| n != 0)
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or_else(overflow)?;
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}

/// The shape of an item holding `T`s, after checking dtype and payload size.
fn checked_meta<T: Element>(item: &Item) -> Result<Vec<usize>, ArrayError> {
    let (dtype, shape) = array_meta(item)?;
    if dtype != T::DTYPE {
        return Err(ArrayError::DtypeMismatch {
            expected: T::DTYPE.to_string(),
            found: dtype,
        });
    }
    check_size(&shape, std::mem::size_of::<T>(), item.payload.len())?;
    Ok(shape)
}

fn check_size(shape: &[usize], elem_size: usize, payload: usize) -> Result<(), ArrayError> {
    let expected = element_count(shape)?
        .checked_mul(elem_size)
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or_else(|| ArrayError::BadShape(format!("byte size of {shape:?} overflows")))?;
    if expected != payload {
        return Err(ArrayError::SizeMismatch {
            shape: shape.to_vec(),
            elem_size,
            expected,
            payload,
        });
    }
    Ok(())
}

/// The payload as `T`s without copying, if aligned. The length must already
/// be a multiple of the element size.
fn aligned_slice<T: Element>(payload: &[u8]) -> Result<&[T], ArrayError> {
    if payload.is_empty() {
        // An empty payload's address may be anything (e.g. `Bytes::new()`).
        return Ok(&[]);
    }
    bytemuck::try_cast_slice(payload).map_err(|_| ArrayError::Unaligned {
        align: std::mem::align_of::<T>(),
        addr: payload.as_ptr() as usize,
    })
}

/// The payload as `T`s: borrowed when aligned, else copied once. The length
/// must already be a multiple of the element size.
fn payload_elements<T: Element>(payload: &[u8]) -> Cow<'_, [T]> {
    match aligned_slice::<T>(payload) {
        Ok(slice) => Cow::Borrowed(slice),
        Err(_) => {
            let mut vec = vec![T::zeroed(); payload.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut vec).copy_from_slice(payload);
            Cow::Owned(vec)
        }
    }
}

fn view_of<'a, T>(shape: &[usize], slice: &'a [T]) -> Result<ArrayViewD<'a, T>, ArrayError> {
    ArrayView::from_shape(IxDyn(shape), slice)
        .map_err(|e| ArrayError::BadShape(format!("{shape:?}: {e}")))
}

/// Element types [`interpolate_items`] supports.
trait Lerp: Element + PartialEq {
    /// `a + w·(b − a)`, in `f64`, rounded to nearest for integers.
    fn lerp(a: Self, b: Self, w: f64) -> Self;
}

macro_rules! lerp_int {
    ($($t:ty),*) => {$(
        impl Lerp for $t {
            fn lerp(a: Self, b: Self, w: f64) -> Self {
                let (x, y) = (f64::from(a), f64::from(b));
                // Clamping keeps the result between the inputs despite rounding.
                let v = ((1.0 - w) * x + w * y).round().clamp(x.min(y), x.max(y));
                v as $t
            }
        }
    )*};
}
lerp_int!(u8, u16, u32, i8, i16, i32);

impl Lerp for f32 {
    fn lerp(a: Self, b: Self, w: f64) -> Self {
        if a == b {
            return a;
        }
        ((1.0 - w) * f64::from(a) + w * f64::from(b)) as f32
    }
}

impl Lerp for f64 {
    fn lerp(a: Self, b: Self, w: f64) -> Self {
        if a == b {
            return a;
        }
        (1.0 - w) * a + w * b
    }
}

fn lerp_payloads<T: Lerp>(
    a: &Item,
    b: &Item,
    shape: &[usize],
    w: f64,
) -> Result<Bytes, ArrayError> {
    let size = std::mem::size_of::<T>();
    check_size(shape, size, a.payload.len())?;
    check_size(shape, size, b.payload.len())?;
    if w == 0.0 {
        return Ok(a.payload.clone());
    }
    if w == 1.0 {
        return Ok(b.payload.clone());
    }
    let xs = payload_elements::<T>(&a.payload);
    let ys = payload_elements::<T>(&b.payload);
    let out: Vec<T> = xs
        .iter()
        .zip(ys.iter())
        .map(|(&x, &y)| T::lerp(x, y, w))
        .collect();
    Ok(vec_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::ndarray::{Array2, Array3, Axis};
    use proptest::prelude::*;

    fn u16_frame(rows: usize, cols: usize) -> Array2<u16> {
        Array2::from_shape_fn((rows, cols), |(r, c)| (r * 1000 + c * 7) as u16)
    }

    fn with_meta(dtype: Option<Value>, shape: Option<Value>, payload: Bytes) -> Item {
        let mut item = Item {
            payload,
            ..Default::default()
        };
        if let Some(v) = dtype {
            item.metadata.insert(DTYPE_KEY.to_string(), v);
        }
        if let Some(v) = shape {
            item.metadata.insert(SHAPE_KEY.to_string(), v);
        }
        item
    }

    /// `bytes` copied into a payload whose address is odd (unaligned for
    /// every element type wider than a byte).
    fn misaligned(bytes: &[u8]) -> Bytes {
        let mut buf = vec![0u8; bytes.len() + 2];
        let start = 1 - (buf.as_ptr() as usize & 1);
        buf[start..start + bytes.len()].copy_from_slice(bytes);
        let payload = Bytes::from(buf).slice(start..start + bytes.len());
        assert_eq!(payload.as_ptr() as usize % 2, 1);
        payload
    }

    #[test]
    fn round_trip_u16_2d() {
        let a = u16_frame(103, 51);
        let item = array_item(a.clone());
        assert_eq!(item.payload.len(), 103 * 51 * 2);
        assert_eq!(
            array_meta(&item).unwrap(),
            ("u16".to_string(), vec![103, 51])
        );
        let view = item_array_view::<u16>(&item).unwrap();
        assert_eq!(view, a.view().into_dyn());
        let back = item_array::<u16>(&item).unwrap();
        assert!(back.is_view());
        assert_eq!(back, a.into_dyn());
    }

    #[test]
    fn round_trip_full_detector_frame() {
        let a = u16_frame(1030, 514);
        let item = array_item(a.clone());
        assert_eq!(item.payload.len(), 1030 * 514 * 2);
        let back = item_array_view::<u16>(&item).unwrap();
        assert_eq!(back.into_dimensionality::<::ndarray::Ix2>().unwrap(), a);
    }

    #[test]
    fn round_trip_f32_3d() {
        let a = Array3::<f32>::from_shape_fn((3, 4, 5), |(i, j, k)| {
            i as f32 * 1.5 - j as f32 * 0.25 + k as f32 * 1e-3
        });
        let item = array_item(a.clone());
        assert_eq!(
            array_meta(&item).unwrap(),
            ("f32".to_string(), vec![3, 4, 5])
        );
        let back = item_array::<f32>(&item).unwrap();
        assert_eq!(back, a.view().into_dyn());
        let via_view = array_view_item(a.view());
        assert_eq!(via_view.payload, item.payload);
        assert_eq!(via_view.metadata, item.metadata);
    }

    #[test]
    fn round_trip_other_dtypes() {
        let a = ::ndarray::arr2(&[[1i32, -2], [3, i32::MIN]]);
        assert_eq!(
            item_array::<i32>(&array_item(a.clone())).unwrap(),
            a.into_dyn()
        );
        let b = ::ndarray::arr1(&[0u8, 255, 7]);
        assert_eq!(
            item_array::<u8>(&array_item(b.clone())).unwrap(),
            b.into_dyn()
        );
        let c = ::ndarray::arr1(&[u32::MAX, 0]);
        assert_eq!(
            item_array::<u32>(&array_item(c.clone())).unwrap(),
            c.into_dyn()
        );
        let d = ::ndarray::arr1(&[f64::MIN_POSITIVE, -0.0, 1e300]);
        assert_eq!(
            item_array::<f64>(&array_item(d.clone())).unwrap(),
            d.into_dyn()
        );
    }

    #[test]
    fn zero_dimensional_and_empty_arrays() {
        let scalar = ::ndarray::arr0(42u16);
        let item = array_item(scalar.clone());
        assert_eq!(array_meta(&item).unwrap(), ("u16".to_string(), vec![]));
        assert_eq!(item_array::<u16>(&item).unwrap(), scalar.into_dyn());

        let empty = Array2::<u16>::zeros((0, 514));
        let item = array_item(empty);
        assert!(item.payload.is_empty());
        let view = item_array_view::<u16>(&item).unwrap();
        assert_eq!(view.shape(), &[0, 514]);
        let item = array_view_item(Array2::<f64>::zeros((3, 0)).view());
        assert_eq!(item_array::<f64>(&item).unwrap().shape(), &[3, 0]);
    }

    #[test]
    fn array_item_does_not_copy_standard_layout() {
        let a = u16_frame(64, 48);
        let data = a.as_ptr() as *const u8;
        let item = array_item(a);
        assert_eq!(item.payload.as_ptr(), data);
    }

    #[test]
    fn array_item_does_not_copy_row_sliced_array() {
        // Dropping leading rows keeps standard layout at an offset into the buffer.
        let a = u16_frame(10, 8);
        let tail = a.slice_move(::ndarray::s![3.., ..]);
        assert!(tail.is_standard_layout());
        let data = tail.as_ptr() as *const u8;
        let expected = tail.clone();
        let item = array_item(tail);
        assert_eq!(item.payload.as_ptr(), data);
        assert_eq!(item.payload.len(), 7 * 8 * 2);
        assert_eq!(item_array::<u16>(&item).unwrap(), expected.into_dyn());
    }

    #[test]
    fn view_points_into_aligned_payload() {
        let item = array_item(u16_frame(16, 9));
        let view = item_array_view::<u16>(&item).unwrap();
        assert_eq!(view.as_ptr() as *const u8, item.payload.as_ptr());
        let cow = item_array::<u16>(&item).unwrap();
        assert!(cow.is_view());
        assert_eq!(cow.as_ptr() as *const u8, item.payload.as_ptr());
    }

    #[test]
    fn unaligned_payload_falls_back_to_copy() {
        let a = u16_frame(5, 7);
        let aligned = array_item(a.clone());
        let mut item = aligned.clone();
        item.payload = misaligned(&aligned.payload);
        match item_array_view::<u16>(&item) {
            Err(ArrayError::Unaligned { align, addr }) => {
                assert_eq!(align, 2);
                assert_eq!(addr, item.payload.as_ptr() as usize);
            }
            other => panic!("expected Unaligned, got {other:?}"),
        }
        let back = item_array::<u16>(&item).unwrap();
        assert!(back.is_owned());
        assert_eq!(back, a.into_dyn());

        let f =
            Array3::<f64>::from_shape_fn((2, 3, 2), |(i, j, k)| (i * 6 + j * 2 + k) as f64 / 3.0);
        let mut item = array_item(f.clone());
        item.payload = misaligned(&item.payload.clone());
        assert!(matches!(
            item_array_view::<f64>(&item),
            Err(ArrayError::Unaligned { align: 8, .. })
        ));
        assert_eq!(item_array::<f64>(&item).unwrap(), f.into_dyn());
    }

    #[test]
    fn transposed_array_round_trips_with_transposed_values() {
        let a = u16_frame(4, 6);
        let t = a.clone().reversed_axes(); // 6×4, Fortran order: not standard
        assert!(!t.is_standard_layout());
        let item = array_item(t);
        assert_eq!(array_meta(&item).unwrap().1, vec![6, 4]);
        let back = item_array::<u16>(&item).unwrap();
        assert_eq!(back, a.t().into_dyn());
        for r in 0..6 {
            for c in 0..4 {
                assert_eq!(back[[r, c]], a[[c, r]]);
            }
        }
        let via_view = array_view_item(a.t());
        assert_eq!(via_view.payload, item.payload);

        // A strided (every other column) view, too.
        let strided = a.slice(::ndarray::s![.., ..;2]);
        let item = array_view_item(strided);
        assert_eq!(item_array::<u16>(&item).unwrap(), strided.into_dyn());
        let inverted = a.clone().slice_move(::ndarray::s![..;-1, ..]);
        let item = array_item(inverted.clone());
        assert_eq!(item_array::<u16>(&item).unwrap(), inverted.into_dyn());
        let col = a.index_axis(Axis(1), 2);
        let item = array_view_item(col);
        assert_eq!(item_array::<u16>(&item).unwrap(), col.into_dyn());
    }

    #[test]
    fn dtype_mismatch_is_reported() {
        let item = array_item(u16_frame(2, 2));
        assert_eq!(
            item_array_view::<f32>(&item).unwrap_err(),
            ArrayError::DtypeMismatch {
                expected: "f32".to_string(),
                found: "u16".to_string()
            }
        );
        assert!(matches!(
            item_array::<i16>(&item),
            Err(ArrayError::DtypeMismatch { .. })
        ));
    }

    #[test]
    fn size_mismatch_is_reported() {
        let mut item = array_item(u16_frame(3, 4));
        item.payload = item.payload.slice(..item.payload.len() - 2);
        assert_eq!(
            item_array_view::<u16>(&item).unwrap_err(),
            ArrayError::SizeMismatch {
                shape: vec![3, 4],
                elem_size: 2,
                expected: 24,
                payload: 22
            }
        );
        assert!(matches!(
            item_array::<u16>(&item),
            Err(ArrayError::SizeMismatch { .. })
        ));
        // An odd payload length for u16 is a size mismatch, not a cast panic.
        let mut item = with_meta(
            Some(meta::string("u16")),
            Some(meta::string("1")),
            Bytes::from_static(&[1, 2, 3]),
        );
        assert!(matches!(
            item_array::<u16>(&item),
            Err(ArrayError::SizeMismatch { .. })
        ));
        tag_array(&mut item, "u8", &[3]);
        assert_eq!(
            item_array::<u8>(&item).unwrap().as_slice().unwrap(),
            &[1, 2, 3]
        );
    }

    #[test]
    fn metadata_errors() {
        let plain = Item::default();
        assert_eq!(array_meta(&plain), Err(ArrayError::NotAnArray));
        assert_eq!(
            item_array::<u16>(&plain).unwrap_err(),
            ArrayError::NotAnArray
        );

        let int_dtype = with_meta(
            Some(Value {
                kind: Some(Kind::I(2)),
            }),
            Some(meta::string("1")),
            Bytes::new(),
        );
        assert!(matches!(
            array_meta(&int_dtype),
            Err(ArrayError::BadDtype(_))
        ));
        let empty_dtype = with_meta(
            Some(meta::string("")),
            Some(meta::string("1")),
            Bytes::new(),
        );
        assert!(matches!(
            array_meta(&empty_dtype),
            Err(ArrayError::BadDtype(_))
        ));
        let no_shape = with_meta(Some(meta::string("u8")), None, Bytes::new());
        assert!(matches!(
            array_meta(&no_shape),
            Err(ArrayError::BadShape(_))
        ));
        let raw_shape = with_meta(
            Some(meta::string("u8")),
            Some(Value {
                kind: Some(Kind::Raw(Bytes::from_static(b"1,2"))),
            }),
            Bytes::new(),
        );
        assert!(matches!(
            array_meta(&raw_shape),
            Err(ArrayError::BadShape(_))
        ));

        for bad in ["1,,2", "-1", "+3", "1.5", "0x10", "1;2", ",", "1,", "１"] {
            assert!(
                matches!(parse_shape(bad), Err(ArrayError::BadShape(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            parse_shape("1,1,1,1,1,1,1,1,1,1"),
            Err(ArrayError::TooManyDims { dims: 10, limit: 8 })
        );
        assert!(parse_shape(&"1,".repeat(100_000)).is_err());
        assert_eq!(parse_shape("1099511627776").unwrap(), vec![1 << 40]);
        assert!(parse_shape("1099511627777").is_err());
        assert!(parse_shape("99999999999999999999999999").is_err());
        // Every axis within the limit, but the product overflows.
        assert!(matches!(
            parse_shape("1099511627776,1099511627776"),
            Err(ArrayError::BadShape(_))
        ));
        assert!(parse_shape("0,1099511627776,1099511627776").is_err());
        assert_eq!(parse_shape(" 2 ,3 ").unwrap(), vec![2, 3]);
        assert_eq!(parse_shape("0,5").unwrap(), vec![0, 5]);
        // Huge but in-range shape with no payload: a size mismatch, no allocation.
        let huge = with_meta(
            Some(meta::string("f64")),
            Some(meta::string("1048576,1048576")),
            Bytes::new(),
        );
        assert!(matches!(
            item_array::<f64>(&huge),
            Err(ArrayError::SizeMismatch { .. })
        ));
        // Overflowing byte size.
        let overflow = with_meta(
            Some(meta::string("f64")),
            Some(meta::string("1099511627776,1099511627776,1024")),
            Bytes::new(),
        );
        assert!(item_array::<f64>(&overflow).is_err());
    }

    #[test]
    fn error_messages_clip_untrusted_input() {
        let long = format!("{}x", "9".repeat(10_000));
        let msg = parse_shape(&long).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn shape_formatting() {
        assert_eq!(format_shape(&[]), "");
        assert_eq!(format_shape(&[1030, 514]), "1030,514");
        assert_eq!(
            parse_shape(&format_shape(&[7, 0, 3])).unwrap(),
            vec![7, 0, 3]
        );
    }

    #[test]
    #[should_panic(expected = "at most 8 axes")]
    fn too_many_axes_panics_on_write() {
        let a = Array::<u8, IxDyn>::zeros(IxDyn(&[1; 9]));
        let _ = array_item(a);
    }

    #[test]
    fn tag_array_keeps_other_metadata_and_payload() {
        let raw: Vec<u8> = u16_frame(3, 2)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut item = Item {
            payload: Bytes::from(raw),
            ..Default::default()
        };
        item.metadata
            .insert("detector".to_string(), meta::string("jungfrau"));
        tag_array(&mut item, "u16", &[3, 2]);
        assert_eq!(item.metadata.len(), 3);
        assert_eq!(
            item_array::<u16>(&item).unwrap(),
            u16_frame(3, 2).into_dyn()
        );
    }

    #[test]
    fn interpolation_basics() {
        let a = array_item(::ndarray::arr1(&[0u16, 100, 65535, 7]));
        let b = array_item(::ndarray::arr1(&[10u16, 0, 65535, 8]));
        let mid = interpolate_items(&a, &b, 0.5).unwrap();
        assert_eq!(mid.metadata.len(), 2);
        assert_eq!(array_meta(&mid).unwrap(), ("u16".to_string(), vec![4]));
        // 7.5 rounds half away from zero.
        assert_eq!(
            item_array::<u16>(&mid).unwrap().as_slice().unwrap(),
            &[5, 50, 65535, 8]
        );
        // Endpoints share the inputs' payloads.
        assert_eq!(
            interpolate_items(&a, &b, 0.0).unwrap().payload.as_ptr(),
            a.payload.as_ptr()
        );
        assert_eq!(
            interpolate_items(&a, &b, 1.0).unwrap().payload.as_ptr(),
            b.payload.as_ptr()
        );

        let fa = array_item(::ndarray::arr2(&[[0.0f32, 1.0], [-2.0, 4.0]]));
        let fb = array_item(::ndarray::arr2(&[[1.0f32, 1.0], [2.0, 0.0]]));
        let f = interpolate_items(&fa, &fb, 0.25).unwrap();
        assert_eq!(
            item_array::<f32>(&f).unwrap(),
            ::ndarray::arr2(&[[0.25f32, 1.0], [-1.0, 3.0]]).into_dyn()
        );

        let ia = array_item(::ndarray::arr1(&[-10i32, i32::MIN, i32::MAX]));
        let ib = array_item(::ndarray::arr1(&[10i32, i32::MAX, i32::MIN]));
        let i = interpolate_items(&ia, &ib, 0.5).unwrap();
        // Midway between MIN and MAX is -0.5, which rounds away from zero.
        assert_eq!(
            item_array::<i32>(&i).unwrap().as_slice().unwrap(),
            &[0, -1, -1]
        );

        // Unaligned inputs work too.
        let mut ua = a.clone();
        ua.payload = misaligned(&a.payload);
        let um = interpolate_items(&ua, &b, 0.5).unwrap();
        assert_eq!(
            item_array::<u16>(&um).unwrap(),
            item_array::<u16>(&mid).unwrap()
        );
    }

    #[test]
    fn interpolation_errors() {
        let a = array_item(u16_frame(2, 3));
        let b = array_item(u16_frame(3, 2));
        assert_eq!(
            interpolate_items(&a, &b, 0.5).unwrap_err(),
            ArrayError::ShapeMismatch {
                a: vec![2, 3],
                b: vec![3, 2]
            }
        );
        let f = array_item(Array2::<f32>::zeros((2, 3)));
        assert!(matches!(
            interpolate_items(&a, &f, 0.5),
            Err(ArrayError::DtypeMismatch { .. })
        ));
        for w in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                interpolate_items(&a, &a, w),
                Err(ArrayError::BadWeight(_))
            ));
        }
        assert_eq!(
            interpolate_items(&a, &Item::default(), 0.5).unwrap_err(),
            ArrayError::NotAnArray
        );
        let l = array_item(::ndarray::arr1(&[1u64]));
        assert_eq!(
            interpolate_items(&l, &l, 0.5).unwrap_err(),
            ArrayError::UnsupportedDtype("u64".to_string())
        );
        let mut short = a.clone();
        short.payload = short.payload.slice(1..);
        for w in [0.0, 0.5, 1.0] {
            assert!(matches!(
                interpolate_items(&a, &short, w),
                Err(ArrayError::SizeMismatch { .. })
            ));
        }
    }

    fn any_value() -> impl Strategy<Value = Option<Value>> {
        let kind = prop_oneof![
            ".*".prop_map(Kind::S),
            "[0-9, ]{0,40}".prop_map(Kind::S),
            prop::collection::vec(0u64..20, 0..12)
                .prop_map(|d| Kind::S(d.iter().map(u64::to_string).collect::<Vec<_>>().join(","))),
            "(u8|u16|f32|f64|i32|x)".prop_map(Kind::S),
            any::<i64>().prop_map(Kind::I),
            any::<f64>().prop_map(Kind::F),
            any::<bool>().prop_map(Kind::B),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(|v| Kind::Raw(Bytes::from(v))),
        ];
        prop::option::of(prop::option::of(kind).prop_map(|kind| Value { kind }))
    }

    proptest! {
        #[test]
        fn parse_shape_never_panics(s in ".*") {
            let _ = parse_shape(&s);
        }

        #[test]
        fn parse_shape_round_trips(dims in prop::collection::vec(0usize..100_000, 0..=MAX_DIMS)) {
            prop_assume!(element_count(&dims).is_ok());
            prop_assert_eq!(parse_shape(&format_shape(&dims)).unwrap(), dims);
        }

        #[test]
        fn arbitrary_metadata_never_panics(
            dtype in any_value(),
            shape in any_value(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            offset in 0usize..2,
        ) {
            let payload = Bytes::from(payload);
            let payload = payload.slice(offset.min(payload.len())..);
            let item = with_meta(dtype, shape, payload);
            let _ = array_meta(&item);
            let _ = item_array_view::<u16>(&item);
            let _ = item_array::<u16>(&item);
            let _ = item_array::<u8>(&item);
            let _ = item_array::<f64>(&item);
            let _ = interpolate_items(&item, &item, 0.5);
        }

        #[test]
        fn interpolation_u16_endpoints_and_bounds(
            (shape, xs, ys) in prop::collection::vec(1usize..5, 1..4).prop_flat_map(|shape| {
                let n = shape.iter().product::<usize>();
                (
                    Just(shape),
                    prop::collection::vec(any::<u16>(), n),
                    prop::collection::vec(any::<u16>(), n),
                )
            }),
            w in 0.0f64..=1.0,
        ) {
            let a = array_item(Array::from_shape_vec(IxDyn(&shape), xs.clone()).unwrap());
            let b = array_item(Array::from_shape_vec(IxDyn(&shape), ys.clone()).unwrap());
            let at0 = interpolate_items(&a, &b, 0.0).unwrap();
            prop_assert_eq!(item_array::<u16>(&at0).unwrap().iter().copied().collect::<Vec<_>>(), xs.clone());
            let at1 = interpolate_items(&a, &b, 1.0).unwrap();
            prop_assert_eq!(item_array::<u16>(&at1).unwrap().iter().copied().collect::<Vec<_>>(), ys.clone());
            let m = interpolate_items(&a, &b, w).unwrap();
            prop_assert_eq!(array_meta(&m).unwrap(), ("u16".to_string(), shape));
            let ms = item_array::<u16>(&m).unwrap();
            for ((&x, &y), &v) in xs.iter().zip(&ys).zip(ms.iter()) {
                prop_assert!(x.min(y) <= v && v <= x.max(y), "{} not between {} and {}", v, x, y);
                let exact = x as f64 + w * (y as f64 - x as f64);
                prop_assert!((v as f64 - exact).abs() <= 0.5 + 1e-9, "{} vs {}", v, exact);
            }
        }

        #[test]
        fn interpolation_f32_endpoints_exact(
            xs in prop::collection::vec(any::<f32>().prop_filter("finite", |v| v.is_finite()), 1..20),
            seed in any::<u64>(),
        ) {
            let ys: Vec<f32> = xs.iter().enumerate()
                .map(|(i, x)| x * 0.5 + ((seed >> (i % 60)) & 0xff) as f32)
                .collect();
            let a = array_item(::ndarray::Array1::from(xs.clone()));
            let b = array_item(::ndarray::Array1::from(ys.clone()));
            for (w, want) in [(0.0, &xs), (1.0, &ys)] {
                let m = interpolate_items(&a, &b, w).unwrap();
                let got = item_array::<f32>(&m).unwrap();
                for (g, e) in got.iter().zip(want.iter()) {
                    prop_assert_eq!(g.to_bits(), e.to_bits());
                }
            }
        }
    }
}
