//! Codec micro-benchmarks: item encode/decode and data-plane frame
//! encode/decode, each against a plain memcpy of the same bytes measured in
//! the same run; and a view's metastream message (JSON) decoded through
//! `diaspora::view::wire` (its member's location is the fabric's `ItemRef`,
//! flattened in) against the layout it had before (the location fields
//! inline), on the same bytes. Run with `cargo bench --bench codec`.

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

/// The metastream message layout before `ItemRef` (issue 14): the baseline
/// of `view_message`.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[allow(dead_code)] // fields are decoded, not read
enum InlineMessage {
    Item {
        view: String,
        seq: u64,
        id: u64,
        key: String,
        members: Vec<InlineMember>,
        #[serde(default)]
        invalid: bool,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct InlineMember {
    source: String,
    topic: String,
    partition: u32,
    offset: u64,
    #[serde(default)]
    ident: Option<u64>,
    time_us: i64,
}

fn view_message(c: &mut Criterion) {
    use diaspora::view::wire::{self, RefMember, ViewMessage};
    let members = (0..5)
        .map(|i| RefMember {
            source: if i < 4 { "patterns" } else { "recons" }.into(),
            item: diaspora::fabric::ItemRef::new("ptycho/frames", i % 2, 1_000_000 + u64::from(i)),
            ident: Some(17),
            time_us: 1_764_000_000_000_000,
        })
        .collect();
    let m = ViewMessage::Item {
        view: "samples".into(),
        seq: 42,
        id: 0x5eed,
        key: "17".into(),
        members,
        invalid: false,
    };
    let bytes = wire::encode(&m);
    let mut g = c.benchmark_group("view_message/5_members");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("baseline_inline_decode", |b| {
        b.iter(|| serde_json::from_slice::<InlineMessage>(&bytes).unwrap())
    });
    g.bench_function("decode", |b| b.iter(|| wire::decode(&bytes).unwrap()));
    g.bench_function("encode", |b| b.iter(|| wire::encode(&m)));
    g.finish();
}

criterion_group!(benches, codecs, view_message);
criterion_main!(benches);
