//! TLS 1.3 and the post-quantum posture over real sockets (OAP-1 section 7),
//! with certificates made by rcgen in the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;
use oap_codec::{Caps, Frame};
use overlay_core::client::{Client, ConnectOptions, TlsOptions};
use overlay_core::{Delivery, Overlay, OverlayConfig, Peer, StartError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ron_transport::tls::{PqMode, client_config};

/// A CA, and a server certificate for `localhost` and 127.0.0.1, as PEM
/// files; [`Pki::leaf`] makes one more per node (a TLS node's id is its
/// certificate's key).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// Another certificate and key from the same CA, as PEM files.
    fn leaf(&self) -> (PathBuf, PathBuf) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let paths = (self.dir.join(format!("leaf-{n}.pem")), self.dir.join(format!("leaf-{n}.key")));
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        paths
    }
}

fn pki() -> Pki {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("overlay-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pki = Pki { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir, issuer };
    std::fs::write(&pki.ca, pki.issuer.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// TLS on, with a certificate of the node's own.
fn tls_on(c: &mut OverlayConfig, pki: &Pki, pq: &str) {
    let (cert, key) = pki.leaf();
    c.tls.enabled = true;
    c.tls.cert = Some(cert);
    c.tls.key = Some(key);
    c.tls.ca = Some(pki.ca.clone());
    c.tls.pq = pq.into();
}

async fn tls_client(node: &Overlay, pki: &Pki, pq: PqMode) -> Result<Client, overlay_core::client::ClientError> {
    let config = client_config(&pki.ca, pq).unwrap();
    Client::connect(
        &ConnectOptions::new(node.local_addr())
            .caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1)
            .tls(TlsOptions::from_config(config).name("localhost")),
    )
    .await
}

#[tokio::test]
async fn echo_and_pub_sub_over_tls() {
    let pki = pki();
    let node = node(|c| tls_on(c, &pki, "prefer")).await;
    let mut c = tls_client(&node, &pki, PqMode::Prefer).await.unwrap();
    c.send(&Frame::data("over tls")).await.unwrap();
    assert_eq!(within(c.recv()).await.unwrap(), Frame::data("over tls"));
    sub(&mut c, 1, "secure.>").await;
    let mut p = tls_client(&node, &pki, PqMode::Prefer).await.unwrap();
    p.send(&pub_frame(2, "secure.x", "hi")).await.unwrap();
    let Frame::Msg(m) = within(c.recv()).await.unwrap() else { panic!("expected MSG") };
    assert_eq!(&m.payload[..], b"hi");
    // A plain-TCP client cannot speak to a TLS node.
    assert!(Client::connect(&ConnectOptions::new(node.local_addr()).caps(Caps::GOSSIP_V1)).await.is_err());
    wait_metric(&node, "transport_rejected_total", &[("reason", "tls")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn pq_require_refuses_classical_clients_and_accepts_hybrid_ones() {
    let pki = pki();
    let node = node(|c| tls_on(c, &pki, "require")).await;
    assert!(tls_client(&node, &pki, PqMode::Off).await.is_err(), "classical-only client must fail the handshake");
    wait_metric(&node, "transport_rejected_total", &[("reason", "tls")], 1.0).await;

    let c = tls_client(&node, &pki, PqMode::Prefer).await.unwrap();
    let info = c.tls().unwrap();
    assert_eq!((info.kx_group, info.hybrid), ("X25519MLKEM768", true));
    assert!(c.negotiated().caps.contains(Caps::PQ_HYBRID), "the node set PQ_HYBRID in its hello");
    wait_metric(&node, "overlay_tls_sessions_total", &[("kx_group", "X25519MLKEM768")], 1.0).await;
    let (status, body) = get(&node, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pq_ready\":{\"ok\":true"), "{body}");
    node.shutdown().await;
}

#[tokio::test]
async fn pq_off_negotiates_a_classical_group_without_pq_hybrid() {
    let pki = pki();
    let node = node(|c| tls_on(c, &pki, "off")).await;
    let c = tls_client(&node, &pki, PqMode::Prefer).await.unwrap();
    assert!(!c.tls().unwrap().hybrid);
    assert!(!c.negotiated().caps.contains(Caps::PQ_HYBRID));
    wait_metric(&node, "overlay_tls_sessions_total", &[("kx_group", "X25519")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn relay_links_dial_with_tls_and_check_the_peer_name() {
    let pki = pki();
    let b = peer_node(vec![], |c| tls_on(c, &pki, "prefer")).await;
    let mut at_b = b.subscribe(">").unwrap();
    let a = peer_node(vec![], |c| tls_on(c, &pki, "prefer")).await;
    a.add_peer(b.local_addr()).unwrap();
    wait_links(&a, 1).await;
    a.publish("tls.relay", "sealed").unwrap();
    let Some(Delivery::Message(m)) = within(at_b.recv()).await else { panic!() };
    assert_eq!(&m.payload[..], b"sealed");

    // A name the certificate does not carry: the link never comes up.
    let c = peer_node(vec![], |c| tls_on(c, &pki, "prefer")).await;
    c.add_peer(Peer::Detailed { addr: b.local_addr().into(), token: None, name: Some("elsewhere.example".into()) })
        .unwrap();
    // The dial is attempted (B counts the handshake the dialer abandoned) and
    // never links; B keeps exactly the one link from A.
    let rejected = format!("transport_rejected_total{{service=\"{}\",reason=\"tls\"}}", b.config().transport.name);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !overlay_admin::install_recorder().render().lines().any(|l| l.starts_with(&rejected) && !l.ends_with(" 0")) {
        assert!(tokio::time::Instant::now() < deadline, "the dial to the wrong name was never attempted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(c.peers_connected(), 0);
    assert_eq!(b.peers_connected(), 1);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_missing_certificate_file_is_named_in_the_error() {
    let mut cfg = OverlayConfig::default();
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.enabled = false;
    cfg.tls.enabled = true;
    cfg.tls.cert = Some("/nonexistent/cert.pem".into());
    cfg.tls.key = Some("/nonexistent/key.pem".into());
    let err = Overlay::start(cfg).await.err().unwrap();
    assert!(matches!(err, StartError::Tls(_)));
    assert!(err.to_string().contains("tls.cert /nonexistent/cert.pem"), "{err}");
}

#[tokio::test]
async fn a_peer_a_tls_node_cannot_dial_is_refused_and_not_remembered() {
    let pki = pki();
    let node = node(|c| {
        c.admin.enabled = false;
        c.tls.enabled = true;
        c.tls.cert = Some(pki.cert.clone());
        c.tls.key = Some(pki.key.clone());
    })
    .await;
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(node.add_peer(addr), Err(overlay_core::AddPeerError::NoTlsTrust(addr.into())));
    assert!(node.peers().is_empty(), "a refused peer is not listed as dialed");
    node.shutdown().await;
}

#[tokio::test]
async fn a_tls_node_s_id_is_the_hash_of_its_certificate_s_key() {
    use sha2::Digest as _;
    let pki = pki();
    let node = peer_node(vec![], |c| tls_on(c, &pki, "prefer")).await;
    let cert = node.config().tls.cert.clone().unwrap();
    let key = ron_transport::tls::leaf_public_key("tls.cert", &cert).unwrap();
    let id: String = sha2::Sha256::digest(&key).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(node.swarm().node_id, id);
    node.shutdown().await;
    // A configured id would contradict the certificate: refused.
    let mut cfg = OverlayConfig::default();
    tls_on(&mut cfg, &pki, "prefer");
    cfg.node.id = Some("ab".repeat(32));
    assert_eq!(cfg.validate().unwrap_err().key(), "node.id");
}

/// Over TLS the acceptor checks the dialer too: a relay link must present
/// the dialing node's certificate (as a TLS client certificate), and its
/// `NODE` must carry the id that certificate proves.
#[tokio::test]
async fn an_inbound_relay_link_must_prove_its_node_id_with_a_client_certificate() {
    use oap_codec::{NodeAddr, NodeId, SwarmFrame};
    let pki = pki();
    let node = peer_node(vec![], |c| tls_on(c, &pki, "prefer")).await;
    let caps = Caps::GOSSIP_V1 | Caps::PEER_V1 | Caps::SWARM_V1;
    let claims = |id: NodeId| Frame::Swarm(SwarmFrame::Node(NodeAddr { id, addr: "127.0.0.1:1".parse().unwrap() }));
    // The node's own NODE comes first.
    async fn refused(c: &mut Client) -> (u16, String) {
        loop {
            match within(c.recv()).await.unwrap() {
                Frame::Ctrl(oap_codec::Ctrl::Goaway { code, reason, .. }) => return (code, reason.to_string()),
                Frame::Swarm(_) => {}
                other => panic!("expected GOAWAY, got {other:?}"),
            }
        }
    }
    let link = |config| {
        let opts =
            ConnectOptions::new(node.local_addr()).caps(caps).tls(TlsOptions::from_config(config).name("localhost"));
        async move { Client::connect(&opts).await }
    };
    // No certificate: refused, whatever id it claims.
    let mut anonymous = link(client_config(&pki.ca, PqMode::Prefer).unwrap()).await.unwrap();
    anonymous.send(&claims(NodeId([7; 32]))).await.unwrap();
    let (code, reason) = refused(&mut anonymous).await;
    assert_eq!(code, 403);
    assert!(reason.contains("certificate"), "{reason}");

    // A certificate of the CA, and a NODE claiming another id: refused.
    let (cert, key) = pki.leaf();
    let with_cert = || ron_transport::tls::client_config_with_cert(&pki.ca, &cert, &key, PqMode::Prefer).unwrap();
    let mut liar = link(with_cert()).await.unwrap();
    liar.send(&claims(NodeId([7; 32]))).await.unwrap();
    let (code, reason) = refused(&mut liar).await;
    assert_eq!(code, 403);
    assert!(reason.contains("certificate proves"), "{reason}");

    // The id its certificate proves: the swarm takes the link.
    let key_der = ron_transport::tls::leaf_public_key("tls.cert", &cert).unwrap();
    let id = {
        use sha2::Digest as _;
        NodeId(sha2::Sha256::digest(&key_der).into())
    };
    let mut honest = link(with_cert()).await.unwrap();
    honest.send(&claims(id)).await.unwrap();
    honest.send(&Frame::Swarm(SwarmFrame::Join)).await.unwrap();
    wait_links(&node, 1).await;
    // A client without a certificate is still served as a client.
    let mut client = tls_client(&node, &pki, PqMode::Prefer).await.unwrap();
    client.send(&Frame::ping(5)).await.unwrap();
    assert_eq!(within(client.recv()).await.unwrap(), Frame::pong(5));
    node.shutdown().await;
}
