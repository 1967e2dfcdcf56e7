//! `accept` out of descriptors: the accept loop gives up its reserved
//! descriptor to accept and close the waiting client, instead of leaving it
//! in the backlog with no answer. Its own test binary, because it lowers the
//! whole process's descriptor limit (with `prlimit --pid`).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ron_transport::fd::{nofile_limit, open_fds};
use ron_transport::{DisconnectReason, TransportConfig, spawn_transport_with_cancel};

fn set_nofile(n: usize) {
    let pid = std::process::id().to_string();
    // The soft limit only: raising a hard limit back may be refused.
    let limit = format!("--nofile={n}:");
    let status = Command::new("prlimit").args(["--pid", &pid, &limit]).status().unwrap();
    assert!(status.success(), "prlimit {limit} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_waiting_when_accept_hits_emfile_is_closed_not_left_hanging() {
    let before = nofile_limit().unwrap();
    let cfg = TransportConfig { fd_reserve: 16, ..TransportConfig::new("127.0.0.1:0".parse().unwrap(), "emfile-test") };
    let handle = spawn_transport_with_cancel(cfg, |_conn| async { DisconnectReason::PeerClosed }).await.unwrap();
    let rejected = handle.rejected();

    // Take every descriptor the process may open but one, which the client
    // socket below takes: the server's accept then fails with EMFILE.
    set_nofile(open_fds().unwrap() + 32);
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    hog.pop();
    let mut client = std::net::TcpStream::connect(handle.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    let read = client.read(&mut buf);
    drop(hog);
    set_nofile(before);

    match read {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the client was not closed: {other:?}"),
    }
    // The count may trail the close by a scheduling slice on a loaded machine.
    let counted = tokio::time::timeout(Duration::from_secs(5), async {
        while rejected.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(counted.await.is_ok(), "the closed client is counted");
    handle.cancel.cancel();
    handle.task.await.unwrap();
}
