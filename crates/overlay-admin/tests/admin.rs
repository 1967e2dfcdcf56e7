//! The admin contract: every route's status and JSON shape, answered by
//! `respond` with no socket, and `/readyz` over a real socket before and
//! after the listener gate is set.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use overlay_admin::{AdminConfig, AdminHandle, AdminState, Readiness, VersionInfo, gate, install_recorder, respond};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn state(readiness: Readiness) -> AdminState {
    AdminState {
        readiness,
        version: VersionInfo::new("svc-overlay", "9.9.9"),
        configz: Arc::new(serde_json::json!({ "config": { "transport.max_conns": { "value": 5, "source": "cli" } } })),
        metrics: install_recorder(),
        service: "admin-test".into(),
        peersz: None,
    }
}

async fn call(state: &AdminState, method: Method, path: &str) -> (u16, String) {
    let resp = respond(state, &method, path);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn every_route_answers_with_its_shape() {
    let readiness = Readiness::new(&[gate::CFG_LOADED, gate::LISTENERS_BOUND]);
    let st = state(readiness.clone());

    assert_eq!(call(&st, Method::GET, "/healthz").await, (200, r#"{"alive":true}"#.into()));

    let (status, body) = call(&st, Method::GET, "/readyz").await;
    assert_eq!(status, 503);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["ready"], false);
    assert_eq!(r["missing"], serde_json::json!(["cfg_loaded", "listeners_bound"]));
    assert_eq!(r["gates"]["cfg_loaded"]["ok"], false);

    readiness.set(gate::CFG_LOADED, true);
    readiness.set_observed(gate::LISTENERS_BOUND, true, 1.0, 1.0);
    let (status, body) = call(&st, Method::GET, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["gates"]["listeners_bound"]["observed"], 1.0);
    assert_eq!(r["gates"]["listeners_bound"]["threshold"], 1.0);

    let (status, body) = call(&st, Method::GET, "/version").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["name"].as_str(), v["version"].as_str()), (Some("svc-overlay"), Some("9.9.9")));
    assert!(v["git"].as_str().is_some_and(|g| !g.is_empty()));
    assert!(v["built"].as_str().is_some_and(|b| b.ends_with('Z')));

    let (status, body) = call(&st, Method::GET, "/configz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["config"]["transport.max_conns"]["source"],
        "cli"
    );

    metrics::counter!("admin_test_counter", "service" => "admin-test").increment(3);
    let (status, body) = call(&st, Method::GET, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("admin_test_counter{service=\"admin-test\"} 3"), "{body}");

    let (status, _) = call(&st, Method::GET, "/missing").await;
    assert_eq!(status, 404);
    let resp = respond(&st, &Method::DELETE, "/healthz");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut raw)).await.unwrap().unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_string())
}

#[tokio::test]
async fn readyz_is_503_until_the_listener_gate_is_set() {
    let readiness = Readiness::new(&[gate::LISTENERS_BOUND, gate::METRICS_BOUND, gate::CFG_LOADED]);
    readiness.set(gate::CFG_LOADED, true);
    let cfg = AdminConfig { addr: "127.0.0.1:0".parse().unwrap(), service: "admin-test".into() };
    let admin = AdminHandle::start(cfg, state(readiness.clone())).unwrap();

    let (status, body) = http_status(admin.addr(), "/readyz").await;
    assert_eq!(status, 503);
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["missing"], serde_json::json!(["listeners_bound"]), "metrics_bound is set by the serving admin plane");

    readiness.set(gate::LISTENERS_BOUND, true);
    assert_eq!(http_status(admin.addr(), "/readyz").await.0, 200);
    assert_eq!(http_status(admin.addr(), "/healthz").await.0, 200);

    let addr = admin.addr();
    admin.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "stopped admin plane closed its socket");
}
