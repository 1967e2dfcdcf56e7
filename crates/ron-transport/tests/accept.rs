//! The accept loop over real sockets: echo through a `Conn`, the `max_conns`
//! cap, cancel that lets live connections finish, and lifecycle events.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ron_transport::{DisconnectReason, TransportConfig, TransportEvent, spawn_transport_with_cancel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

async fn echo_transport(max_conns: usize) -> ron_transport::TransportHandle {
    let mut cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), "transport-test");
    cfg.max_conns = max_conns;
    spawn_transport_with_cancel(cfg, |mut conn| async move {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return DisconnectReason::PeerClosed,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        return DisconnectReason::Io;
                    }
                }
                Err(_) => return DisconnectReason::Io,
            }
        }
    })
    .await
    .unwrap()
}

async fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, msg);
}

async fn next_event(rx: &mut broadcast::Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn connection_over_max_conns_is_closed_at_once() {
    let handle = echo_transport(2).await;
    let mut a = TcpStream::connect(handle.addr).await.unwrap();
    let mut b = TcpStream::connect(handle.addr).await.unwrap();
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;

    let mut c = TcpStream::connect(handle.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the third connection is closed without being served");

    // Freeing a permit lets a new connection in.
    drop(a);
    let mut d = loop {
        let mut d = TcpStream::connect(handle.addr).await.unwrap();
        d.write_all(b"d").await.unwrap();
        let mut one = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), d.read(&mut one)).await.unwrap() {
            Ok(1) => break d,
            _ => tokio::task::yield_now().await,
        }
    };
    round_trip(&mut d, b"still served").await;
    handle.cancel.cancel();
    drop((b, d));
    handle.task.await.unwrap();
}

#[tokio::test]
async fn cancel_stops_accepting_while_live_connections_finish() {
    let handle = echo_transport(16).await;
    let mut events = handle.events.subscribe();
    let mut live = TcpStream::connect(handle.addr).await.unwrap();
    round_trip(&mut live, b"before").await;
    let TransportEvent::Connected { id, .. } = next_event(&mut events).await else { panic!("expected Connected") };

    handle.cancel.cancel();
    // The listener closes: new connections are refused.
    let refused = loop {
        match TcpStream::connect(handle.addr).await {
            Err(_) => break true,
            Ok(s) => {
                drop(s);
                tokio::task::yield_now().await;
                if handle.task.is_finished() {
                    break false;
                }
            }
        }
    };
    assert!(refused);
    // The live connection is still served, and the loop waits for it.
    round_trip(&mut live, b"after cancel").await;
    assert!(!handle.task.is_finished());
    assert_eq!(handle.live_connections(), 1);
    drop(live);
    tokio::time::timeout(Duration::from_secs(10), handle.task).await.unwrap().unwrap();
    match next_event(&mut events).await {
        TransportEvent::Disconnected { id: gone, reason, .. } => {
            assert_eq!((gone, reason), (id, DisconnectReason::PeerClosed));
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}
