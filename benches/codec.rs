//! Codec micro-benchmarks: item encode/decode and data-plane frame
//! encode/decode, each against a plain memcpy of the same bytes measured in
//! the same run. Run with `cargo bench --bench codec`.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use diaspora::proto::v1::{self, frame::Body};
use diaspora::proto::{decode_frame, encode_frame};
use prost::Message;

fn item(size: usize) -> v1::Item {
    let mut it =
        diaspora::fabric::item::payload_item(diaspora::fabric::bench::synthetic_payload(size));
    it.metadata.insert(
        "frame".into(),
        v1::Value {
            kind: Some(v1::value::Kind::I(7)),
        },
    );
    it
}

fn codecs(c: &mut Criterion) {
    for size in [128usize, 1 << 20] {
        let mut g = c.benchmark_group(format!("codec/{size}B"));
        g.measurement_time(Duration::from_secs(3)).sample_size(20);
        g.throughput(Throughput::Bytes(size as u64));
        let it = item(size);
        let payload = it.payload.clone();
        g.bench_function("baseline_memcpy", |b| b.iter(|| payload.to_vec()));
        g.bench_function("item_encode", |b| b.iter(|| it.encode_to_vec()));
        let encoded = Bytes::from(it.encode_to_vec());
        g.bench_function("item_decode", |b| {
            b.iter(|| v1::Item::decode(encoded.clone()).unwrap())
        });
        let frame = v1::Frame {
            id: 1,
            body: Some(Body::ProduceRequest(v1::ProduceRequest {
                topic: "bench".into(),
                partition: 0,
                batch: encoded.clone(),
            })),
        };
        g.bench_function("frame_encode", |b| b.iter(|| encode_frame(&frame)));
        let wire = encode_frame(&frame).slice(4..);
        g.bench_function("frame_decode", |b| {
            b.iter_batched(
                || wire.clone(),
                |w| decode_frame(w, u64::MAX).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
