//! Encode and decode throughput for DATA frames of 64 B, 1 KiB, 64 KiB and 1 MiB - 5 B.

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use oap_codec::{Frame, MAX_FRAME, OapCodec};
use tokio_util::codec::{Decoder, Encoder};

/// Frames per measured batch, so per-iteration overhead stays small for tiny frames.
const BATCH: usize = 64;

fn sizes() -> [(&'static str, usize); 4] {
    [("64B", 64), ("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", MAX_FRAME as usize - 1)]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, size) in sizes() {
        let frame = Frame::Data(Bytes::from(vec![0xa5u8; size]));
        let batch = if size > 64 * 1024 { 4 } else { BATCH };
        group.throughput(Throughput::Bytes((frame.encoded_len() * batch) as u64));
        let mut codec = OapCodec::new();
        let mut dst = BytesMut::with_capacity(frame.encoded_len() * batch);
        group.bench_function(name, |b| {
            b.iter(|| {
                dst.clear();
                for _ in 0..batch {
                    codec.encode(&frame, &mut dst).expect("frame fits max_frame");
                }
                std::hint::black_box(&dst);
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, size) in sizes() {
        let frame = Frame::Data(Bytes::from(vec![0xa5u8; size]));
        let batch = if size > 64 * 1024 { 4 } else { BATCH };
        let mut wire = BytesMut::new();
        for _ in 0..batch {
            OapCodec::new().encode(&frame, &mut wire).expect("frame fits max_frame");
        }
        let wire = wire.freeze();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut codec = OapCodec::new();
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut src| {
                    let mut n = 0;
                    while let Some(f) = codec.decode(&mut src).expect("valid frames") {
                        std::hint::black_box(f);
                        n += 1;
                    }
                    assert_eq!(n, batch);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
