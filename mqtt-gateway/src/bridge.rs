//! Bridge mode: connect to an external broker (mosquitto, EMQX, HiveMQ) as an MQTT 3.1.1 client
//! with rumqttc, append what it delivers to our streams, and publish our stream messages to it.
//!
//! - **Inbound** (`[[bridge.subscribe]]`): every PUBLISH received from the remote broker goes
//!   through the normal store path (routes, dead-letter, duplicate filter) under the bridge's
//!   client id, and is acknowledged to the remote broker **after** the append (manual acks).
//! - **Outbound** (`[[bridge.publish]]`): the bridge is a session named `$bridge/<name>`
//!   subscribed (no-local) to those filters, so it receives what any writer appends to a routed
//!   stream, except what the bridge itself brought in (no loops), and publishes it to the remote
//!   broker. The session's bounded queue and overflow policy apply.
//! - **Reconnect**: on any connection error the bridge waits (0.5 s doubling to 10 s) and
//!   reconnects; it subscribes again whenever the remote broker has no session for it. With
//!   `clean_session = false` (default) the remote broker keeps its subscriptions and queues QoS
//!   1/2 messages while the bridge is away, and rumqttc resends unacknowledged publishes.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;

use crate::auth::Identity;
use crate::broker::{Broker, Subscription};
use crate::codec::Publish;
use crate::config::BridgeConfig;
use crate::meta::MessageProperties;

/// Prefix of bridge session ids; MQTT clients may not use it.
pub const SESSION_PREFIX: &str = "$bridge/";

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Runs one bridge until `shutdown` flips.
pub async fn run(broker: Arc<Broker>, cfg: BridgeConfig, mut shutdown: watch::Receiver<bool>) {
    let session_id = format!("{SESSION_PREFIX}{}", cfg.name);
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("ringway-bridge-{}", cfg.name));
    let (host, port) = match cfg.address.rsplit_once(':').and_then(|(h, p)| {
        p.parse::<u16>()
            .ok()
            .map(|p| (h.trim_matches(['[', ']']).to_owned(), p))
    }) {
        Some(hp) => hp,
        None => {
            log::error!("bridge {}: bad address {:?}", cfg.name, cfg.address);
            return;
        }
    };
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_clean_session(cfg.clean_session);
    opts.set_keep_alive(Duration::from_secs(u64::from(cfg.keep_alive_secs.max(5))));
    opts.set_manual_acks(true);
    if let Some(user) = &cfg.username {
        let password = cfg
            .password_env
            .as_ref()
            .and_then(|v| std::env::var(v).ok())
            .unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);

    // Outbound: a session subscribed (no-local) to the publish filters.
    let (session, _) = broker.attach(&session_id, true);
    for f in &cfg.publish {
        broker.subscribe(
            &session,
            Subscription {
                filter: f.filter.clone(),
                qos: f.qos.min(2),
                no_local: true,
                retain_as_published: true,
            },
            2,
        );
    }
    session
        .online
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let identity = Identity::unrestricted();
    let out_client = client.clone();
    let out_session = session.clone();
    let outbound = tokio::spawn(async move {
        // Holding `data` makes this task the session's only receiver.
        let _data = out_session.data.lock().await;
        loop {
            let o = out_session.queue.recv().await;
            if out_client
                .publish(
                    o.msg.topic.clone(),
                    qos(o.qos),
                    o.retain,
                    o.msg.payload.to_vec(),
                )
                .await
                .is_err()
            {
                return;
            }
        }
    });

    let mut backoff = Duration::from_millis(500);
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = Duration::from_millis(500);
                log::info!("bridge {}: connected to {}", cfg.name, cfg.address);
                if !ack.session_present {
                    for f in &cfg.subscribe {
                        let _ = client.subscribe(f.filter.clone(), qos(f.qos)).await;
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let publish = Publish {
                    topic: p.topic.clone(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    dup: p.dup,
                    pkid: p.pkid,
                    payload: p.payload.clone(),
                    properties: MessageProperties::default(),
                    topic_alias: None,
                };
                // Append first, acknowledge to the remote broker after.
                let b = broker.clone();
                let id = identity.clone();
                let sid = session_id.clone();
                let stored =
                    tokio::task::spawn_blocking(move || b.store(&sid, &id, &publish, false, false))
                        .await;
                match stored {
                    Ok(crate::broker::StoreOutcome::Failed) | Err(_) => {
                        log::error!("bridge {}: append failed; not acknowledging", cfg.name);
                    }
                    Ok(_) => {
                        let _ = client.ack(&p).await;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("bridge {}: {e}; reconnecting in {backoff:?}", cfg.name);
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    outbound.abort();
    let _ = client.try_disconnect();
    broker.remove_session(&session);
}
