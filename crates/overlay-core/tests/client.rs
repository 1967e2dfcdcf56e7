//! The typed client over real sockets: requests and their answers, the
//! deliveries that arrive while it waits, and the one receive path
//! (keepalive answered, `GOAWAY` and `ERROR` typed).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use overlay_core::client::{Client, ClientError, ConnectOptions};
use overlay_core::{Delivery, Topic};

fn topic(t: &str) -> Topic {
    t.parse().unwrap()
}

#[tokio::test]
async fn publish_subscribe_ping_and_echo() {
    let node = node(|_| {}).await;
    let mut subscriber = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();
    let mut deliveries = within(subscriber.subscribe(&"demo.>".parse().unwrap())).await.unwrap();
    let mut publisher = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();

    let receipt = within(publisher.publish(&topic("demo.x"), Bytes::from_static(b"hi"))).await.unwrap();
    assert_eq!((receipt.queued, receipt.dropped), (1, 0));
    match within(deliveries.next()).await.unwrap() {
        Delivery::Message(m) => {
            assert_eq!((m.topic, m.msg_id, m.hops), (topic("demo.x"), receipt.msg_id, 0));
            assert_eq!(&m.payload[..], b"hi");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    within(publisher.ping()).await.unwrap();
    assert_eq!(&within(publisher.echo(Bytes::from_static(b"abc"))).await.unwrap()[..], b"abc");
}

#[tokio::test]
async fn deliveries_that_arrive_while_waiting_for_receipts_are_kept_in_order() {
    let node = node(|_| {}).await;
    let mut c = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();
    within(c.subscribe(&"own.>".parse().unwrap())).await.unwrap();
    // Its own messages come back to it, between and after their receipts.
    let messages = (0..600u16).map(|i| (topic("own.x"), Bytes::from(i.to_be_bytes().to_vec())));
    let mut receipts = 0;
    within(c.publish_all(messages, |r| {
        assert_eq!(r.unwrap().queued, 1);
        receipts += 1;
    }))
    .await
    .unwrap();
    assert_eq!(receipts, 600);
    for i in 0..600u16 {
        match within(c.next_delivery()).await.unwrap() {
            Delivery::Message(m) => assert_eq!(&m.payload[..], i.to_be_bytes()),
            other => panic!("message {i}: got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_subscriber_that_waits_answers_keepalive_and_stays_connected() {
    let node = node(|c| c.transport.idle_timeout_ms = 1000).await;
    let mut subscriber = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();
    let mut deliveries = within(subscriber.subscribe(&"quiet.>".parse().unwrap())).await.unwrap();
    // Two and a half idle timeouts of silence: the node's PINGs are
    // answered inside `next`, so no GOAWAY 408 ends the wait.
    let waited = tokio::time::timeout(Duration::from_millis(2500), deliveries.next()).await;
    assert!(waited.is_err(), "the wait ended: {waited:?}");
    let mut publisher = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();
    within(publisher.publish(&topic("quiet.x"), Bytes::from_static(b"still here"))).await.unwrap();
    assert!(matches!(within(deliveries.next()).await.unwrap(), Delivery::Message(_)));
}

#[tokio::test]
async fn a_goaway_ends_the_wait_as_a_typed_error() {
    let node = node(|_| {}).await;
    let mut c = Client::connect(&ConnectOptions::new(node.local_addr())).await.unwrap();
    let mut deliveries = within(c.subscribe(&"a.>".parse().unwrap())).await.unwrap();
    let (next, ()) = within(async { tokio::join!(deliveries.next(), node.shutdown()) }).await;
    match next {
        Err(ClientError::GoAway { code, .. }) => assert_eq!(code, 503),
        other => panic!("expected GOAWAY 503, got {other:?}"),
    }
}
