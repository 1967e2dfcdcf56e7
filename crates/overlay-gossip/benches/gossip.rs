//! Publish fanout to 1, 100 and 10,000 subscribers (and to 10,000 that it
//! leaves congested, each gathered once for the publisher's stall), and
//! matching one topic against 10,000 patterns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use overlay_gossip::{DeliveryQueue, GossipConfig, Pattern, PublishBatch, Registry, Topic};

fn registry() -> Registry {
    let cfg = GossipConfig { delivery_queue_bytes: 64 << 20, max_pending_bytes: 64 << 30, ..GossipConfig::default() };
    Registry::new(cfg, "bench")
}

/// `n` subscribers to `bench.>`, and their queues.
fn subscribe(reg: &Registry, n: usize) -> Vec<Arc<DeliveryQueue>> {
    let pattern: Pattern = "bench.>".parse().expect("valid pattern");
    (0..n)
        .map(|_| {
            let q = reg.queue();
            let id = reg.attach(q.clone());
            reg.subscribe(id, &pattern).expect("under max_subscriptions");
            q
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_fanout");
    for subscribers in [1usize, 100, 10_000] {
        let reg = registry();
        let queues = subscribe(&reg, subscribers);
        let topic: Topic = "bench.topic".parse().expect("valid topic");
        let payload = Bytes::from(vec![7u8; 64]);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("{subscribers}_subs_64B"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut out = Vec::new();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(64);
                    let start = Instant::now();
                    for _ in 0..n {
                        let f = reg
                            .publish(&topic, payload.clone(), start, &mut PublishBatch::default())
                            .expect("fits max_frame");
                        assert_eq!(f.dropped, 0);
                    }
                    spent += start.elapsed();
                    for q in &queues {
                        out.clear();
                        q.take(usize::MAX, &mut out);
                    }
                    left -= n;
                }
                spent
            })
        });
    }
    group.finish();
}

/// One publish that leaves 10,000 queues more than half full: every one is
/// gathered into the batch once (linear, not a scan per queue).
fn congested(c: &mut Criterion) {
    let cfg = GossipConfig { delivery_queue_bytes: 256, max_pending_bytes: 64 << 30, ..GossipConfig::default() };
    let reg = Registry::new(cfg, "bench");
    let queues = subscribe(&reg, 10_000);
    let topic: Topic = "bench.topic".parse().expect("valid topic");
    let payload = Bytes::from(vec![7u8; 64]);
    c.bench_function("publish_fanout/10000_subs_left_congested", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut out = Vec::new();
            let mut batch = PublishBatch::default();
            for _ in 0..iters {
                // One message in each queue (under half), then the timed one.
                reg.publish(&topic, payload.clone(), Instant::now(), &mut batch).expect("fits max_frame");
                batch.clear();
                let start = Instant::now();
                reg.publish(&topic, payload.clone(), start, &mut batch).expect("fits max_frame");
                spent += start.elapsed();
                assert_eq!(batch.queues().len(), 10_000);
                batch.clear();
                for q in &queues {
                    out.clear();
                    q.take(usize::MAX, &mut out);
                }
            }
            spent
        })
    });
}

fn matching(c: &mut Criterion) {
    let reg = registry();
    // 10,000 patterns over 10,000 subscribers: literal, `*` and `>` mixed.
    for i in 0..10_000u32 {
        let q = reg.queue();
        let sub = reg.attach(q);
        let p = match i % 4 {
            0 => format!("svc{}.put.k{}", i % 100, i),
            1 => format!("svc{}.*.k{}", i % 100, i),
            2 => format!("svc{}.get.>", i % 100),
            _ => format!("other{i}.>"),
        };
        reg.subscribe(sub, &p.parse().expect("valid pattern")).expect("under max_subscriptions");
    }
    // Matches the 100 `svc42.get.>` patterns, and must skip the other 9,900.
    let topic: Topic = "svc42.get.k4242".parse().expect("valid topic");
    assert_eq!(reg.interested(&topic), 100);
    c.bench_function("match_1_topic_vs_10k_patterns", |b| b.iter(|| std::hint::black_box(reg.interested(&topic))));
}

criterion_group!(benches, fanout, congested, matching);
criterion_main!(benches);
