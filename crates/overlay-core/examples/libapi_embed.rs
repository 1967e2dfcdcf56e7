//! Embeds an overlay node in a program, subscribes in-process, and prints
//! what remote clients publish.
//!
//! ```sh
//! cargo run -p overlay-core --example libapi_embed -- 127.0.0.1:9500 'demo.>'
//! # in another terminal:
//! cargo run -p svc-overlay -- pub demo.hello "hi there"
//! ```
//!
//! Stops after Ctrl-C, running the node's drain on the way out.

use std::net::SocketAddr;

use overlay_core::{Delivery, Overlay, OverlayConfig, OverlayEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9500").parse()?;
    let pattern = args.next().unwrap_or_else(|| "demo.>".into());

    let mut config = OverlayConfig::default();
    config.transport.addr = addr;
    config.admin.enabled = false;
    let node = Overlay::start(config).await?;
    let mut subscription = node.subscribe(&pattern)?;
    let mut events = node.events();
    println!("embedded node on {}, subscribed to {pattern}", node.local_addr());

    loop {
        tokio::select! {
            delivery = subscription.recv() => match delivery {
                Some(Delivery::Message(m)) => {
                    println!("{} (hops {}): {}", m.topic, m.hops, String::from_utf8_lossy(&m.payload));
                }
                Some(Delivery::Lagged(n)) => println!("fell behind: {n} messages dropped"),
                None => break,
            },
            Ok(event) = events.recv() => match event {
                OverlayEvent::PeerUp { peer } => println!("relay link up: {peer}"),
                OverlayEvent::PeerDown { peer } => println!("relay link down: {peer}"),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.shutdown().await;
    Ok(())
}
