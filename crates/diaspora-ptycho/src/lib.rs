//! # diaspora-ptycho
//!
//! The science of diaspora's driving case, ptychography, as a pure library:
//! no fabric, no files it was not asked to write. The loop (pools, edge
//! inference, fine-tuning) wires it to streams.
//!
//! | module | what |
//! | --- | --- |
//! | [`files`] | a scan on disk as NumPy reads it (`frames.npy`, `meta.jsonl`, `corners.npy`, truth), read with limits |
//! | [`fft`] | unitary 2-D FFTs on N×N complex arrays with reused plans (rustfft), `fftshift` |
//! | [`sim`] | the forward model: seeded objects of several kinds, probes, raster and Fermat-spiral scans, far-field `u16` frames with dose, Poisson noise and 12-bit saturation |
//! | [`bench`](mod@bench) | `diaspora bench ptycho`: ePIE against NumPy on the same frames, the surrogate against ePIE |
//! | [`epie`] | ePIE reconstruction (Maiden & Rodenburg 2009) from frames and their metadata alone |
//! | [`metrics`] | SSIM and PSNR of amplitude and phase over the illuminated region, global-phase removal |
//! | [`surrogate`] | a PtychoNN-like network on candle-nn: pattern → amplitude and phase of the patch; online trainer, batched inference, stitching, checkpoints |
//! | [`workflow`] | what the `diaspora ptycho` commands do (simulate, reconstruct, train, infer, eval), returning their figures |
//! | [`fuzzing`] | fuzz bodies for every parser of bytes (scan files, checkpoints); targets in `fuzz/` |
//! | [`pictures`] | PNGs of objects side by side, the probe, and curves (plotters) |
//!
//! Conventions used everywhere: a complex value is [`C32`]; an object or
//! probe is an [`ndarray::Array2<C32>`] indexed `[row, col]` (`y`, `x`);
//! a frame is an N×N `u16` array with the zero frequency at its centre
//! (as a detector sees it), and a scan position is the top-left pixel of
//! the N×N window of the object that the probe illuminates.
//!
//! What it does not do: read or write the fabric, detector file formats,
//! or anything about streaming; sub-pixel positions (positions are whole
//! pixels); multi-slice or partially coherent models.
#![warn(missing_docs)]

pub mod bench;
pub mod epie;
pub mod fft;
pub mod files;
pub mod fuzzing;
pub mod metrics;
pub mod pictures;
pub mod sim;
pub mod surrogate;
pub mod workflow;

/// The complex number type of every object, probe and wave.
pub type C32 = num_complex::Complex<f32>;

/// Errors of the ptychography library: each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum PtychoError {
    /// Input that cannot be used: a frame of the wrong shape, a position
    /// outside the object, a parameter out of range.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A checkpoint that cannot be loaded (format, version, NaN weights).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The network library failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a picture failed.
    #[error("picture: {0}")]
    Picture(String),
}

/// The library's result type.
pub type Result<T, E = PtychoError> = std::result::Result<T, E>;
