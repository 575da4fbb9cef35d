//! Runs the `cargo fuzz` target bodies over a few thousand pseudo-random
//! inputs (pure noise and mutated valid segments) so CI covers them.

use diaspora_log::fuzzing::{batch_decode, segment_recovery};
use diaspora_log::{set_base_offset, BatchBuilder, Compression};

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn valid_segment(rng: &mut Rng) -> Vec<u8> {
    let mut seg = Vec::new();
    let mut next = rng.below(3) as u64;
    for _ in 0..1 + rng.below(4) {
        let c = if rng.below(2) == 0 {
            Compression::None
        } else {
            Compression::Zstd { level: 1 }
        };
        let mut b = BatchBuilder::new(c).with_producer(rng.below(3) as u64, rng.next() >> 8);
        let n = 1 + rng.below(5);
        for _ in 0..n {
            let len = rng.below(100);
            let byte = rng.next() as u8;
            b.push(&vec![byte; len], rng.next() as i64);
        }
        let mut raw = b.finish().to_vec();
        set_base_offset(&mut raw, next);
        next += n as u64;
        seg.extend_from_slice(&raw);
    }
    seg
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        match rng.below(4) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let cut = rng.below(data.len() + 1);
                data.truncate(cut);
            }
            2 => data.push(rng.next() as u8),
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
}

#[test]
fn fuzz_bodies_on_random_inputs() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..4000 {
        let mut data = if i % 4 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            valid_segment(&mut rng)
        };
        if i % 4 != 1 {
            mutate(&mut rng, &mut data);
        }
        segment_recovery(&data);
        batch_decode(&data);
        // Single batches reach the deep record checks of batch_decode.
        if data.len() > 60 {
            let total = 12 + u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
            if total <= data.len() {
                batch_decode(&data[..total]);
            }
        }
    }
}
