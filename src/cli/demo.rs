//! `diaspora demo`: the walking skeleton of the ptychography loop on an
//! embedded node. It runs in the `diaspora-demo` crate
//! ([`diaspora_demo::run`]); this only turns the flags into its
//! configuration.

use anyhow::Result;
use diaspora_demo::DemoConfig;

/// Arguments of `diaspora demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Diffraction frames to stream.
    #[arg(long, default_value_t = 2000)]
    pub frames: u64,
    /// Frame width, pixels.
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    /// Frame height, pixels.
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    /// Frames per scan position (a training sample joins them with the
    /// position's reconstruction).
    #[arg(long, default_value_t = 4)]
    pub frames_per_position: u64,
    /// Partitions of the frames topic.
    #[arg(long, default_value_t = 2)]
    pub partitions: u32,
    /// Frame rate at the detector, frames/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Keep the node's data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl DemoArgs {
    /// The demo's configuration.
    pub fn config(&self) -> DemoConfig {
        DemoConfig {
            frames: self.frames,
            width: self.width,
            height: self.height,
            frames_per_position: self.frames_per_position,
            partitions: self.partitions,
            rate: self.rate,
            data_dir: self.data_dir.clone(),
            json: self.json,
        }
    }
}

/// Runs the demo and prints its summary.
pub async fn run(a: DemoArgs) -> Result<()> {
    diaspora_demo::run(a.config()).await
}
