//! Whatever `squeue`, `sbatch` or `sacct` print, the Slurm provider's
//! parsers return lines or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    diaspora_pool::provider::slurm::fuzz_output(data);
});
