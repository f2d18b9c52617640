//! Ringway device SDK: puts microcontrollers on Ringway streams over MQTT.
//!
//! `#![no_std]`, no allocator. The application owns the hardware, the embassy executor and the
//! `embassy-net` [`Stack`](embassy_net::Stack); this crate owns the MQTT session:
//!
//! - [`Outbox`]: a fixed-capacity ring (capacity is a const generic) of readings that are not
//!   yet acknowledged by the gateway. The application [`Outbox::submit`]s readings from any
//!   task; each gets the device id, the boot id and the next sequence number. While the link is
//!   down readings accumulate; after reconnecting they drain in order. When the ring is full
//!   the [`OverflowPolicy`] picks the reading to drop, and the drop is reported and counted.
//! - [`Session`]: connects with client id, credentials and keep-alive, sets a retained last
//!   will (`offline` on `{prefix}/{id}/status`, `online` is published on connect), subscribes to
//!   `{prefix}/{id}/cmd` and hands validated commands to a [`CommandHandler`], publishes the
//!   outbox with QoS 1 and at most `WINDOW` unacknowledged publishes, and reconnects with
//!   exponential backoff and jitter ([`BackoffPolicy`]). Unacknowledged readings are sent again
//!   after a reconnect (the broker's resumed session replays them, or the outbox re-queues them
//!   when the session is fresh), and a publish not acknowledged within
//!   [`SessionConfig::ack_timeout`] forces a reconnect. Duplicates that retransmission creates
//!   are recognisable by `(device_id, boot_id, seq)`, which the gateway uses to store each
//!   reading exactly once.
//! - Wire types ([`wire`]): `Telemetry` and `Command` from `ringway-core`'s no_std part,
//!   serialized with rkyv into a stack buffer (no allocation); the gateway stores the bytes
//!   verbatim and host processes read `&ArchivedTelemetry` straight from the journal.
//!
//! # MQTT client: minimq 0.13
//!
//! Of the no_std clients that build against embassy-net 0.9's `TcpSocket` here (minimq 0.13,
//! mqttrust 1.0, rust-mqtt 0.6) this crate uses **minimq 0.13** because:
//! - it is `async` over any `embedded_io_async::{Read, Write}` transport, which `TcpSocket`
//!   implements, with caller-provided buffers and no allocator (its `defmt` default feature is
//!   turned off unless our `defmt` feature is on);
//! - `publish` does not wait for the PUBACK: it returns an operation handle and acknowledgements
//!   are processed by the same `poll` that yields inbound publishes. Commands that arrive while
//!   publishes are in flight are therefore never dropped, and several QoS 1 publishes can be in
//!   flight at once (our window);
//! - it keeps the protocol state (packet ids, retained QoS 1 packets, replay on a resumed MQTT 5
//!   session, keep-alive) and leaves transport set-up, reconnect timing and dispatch to the
//!   caller, which is exactly the split we want: this crate is only session policy;
//! - it is maintained (QUARTIQ, used in their production instruments).
//!
//! rust-mqtt 0.6 allocates by default (`alloc` feature) and its QoS 1 publish awaits the
//! acknowledgement in the call; mqttrust 1.0 pulls `cortex-m` and a larger dependency tree and
//! fixes capacities through cargo features instead of const generics.
//!
//! # Logging
//! With the `defmt` feature, through defmt; with `log`, through the `log` facade (host
//! simulation); otherwise not at all.
#![cfg_attr(not(test), no_std)]

// The host simulation (`sim` feature) uses the standard library; the SDK itself never does.
#[cfg(feature = "sim")]
extern crate std;

mod fmt;

pub mod backoff;
pub mod command;
pub mod outbox;
pub mod ring;
pub mod sequence;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod topics;

/// Wire types shared with the gateway and host readers (`ringway_core::wire`).
pub use ringway_core::wire;

pub use backoff::{Backoff, BackoffPolicy};
pub use command::{CommandHandler, CommandRejection};
pub use outbox::{Outbox, OverflowPolicy, Stats, Submitted};
pub use session::{Session, SessionBuffers, SessionConfig, SessionError};
pub use topics::Topics;
