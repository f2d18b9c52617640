//! One tailer thread per routed stream: reads every frame appended by any writer (MQTT clients
//! through this gateway, local publishers, replica receivers) and hands it to the matching
//! subscribers' bounded queues.
//!
//! At start-up a tailer first reads its stream from the oldest retained frame to rebuild retained
//! messages and the QoS 1 duplicate filter (when `storage.scan_on_start`), then follows the tail.
//! It sleeps with `park_timeout(poll_interval)` when idle; appends made through the gateway
//! unpark it at once when there are subscribers or the message is retained (otherwise nothing
//! waits for it: it reads them at its next poll).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{Broker, Delivery};
use crate::journal::{JournalError, ReadFrom};

/// Running tailer threads.
#[derive(Debug)]
pub struct Fanout {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Fanout {
    /// Starts one tailer per routed stream and returns once every start-up scan is complete.
    pub fn start(broker: Arc<Broker>) -> Result<Fanout, JournalError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), JournalError>>();
        let streams = broker.routes.streams().to_vec();
        for stream in &streams {
            broker.journal.ensure_stream(stream)?;
        }
        broker
            .journal
            .ensure_stream(&broker.config.storage.dead_letter_stream)?;
        broker
            .journal
            .ensure_stream(&broker.config.storage.sessions_stream)?;
        for stream in streams {
            let broker = broker.clone();
            let stop = stop.clone();
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringway-tail-{stream}"))
                .spawn(move || tail(broker, stream, stop, ready))
                .map_err(|e| JournalError::Storage {
                    stream: "-".into(),
                    message: format!("cannot spawn tailer thread: {e}"),
                })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut fanout = Fanout { stop, threads };
        for _ in 0..fanout.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    fanout.stop();
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(fanout)
    }

    /// Stops and joins the tailers.
    pub fn stop(&mut self) {
        // Relaxed: the flag is the only thing communicated; unpark/join provide the wake-up.
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(
    broker: Arc<Broker>,
    stream: String,
    stop: Arc<AtomicBool>,
    ready: std_mpsc::Sender<Result<(), JournalError>>,
) {
    broker.set_waker(&stream, std::thread::current());
    let name: Arc<str> = Arc::from(stream.as_str());
    let scan = broker.config.storage.scan_on_start;
    let from = if scan {
        ReadFrom::Beginning
    } else {
        ReadFrom::End
    };
    let mut reader = match broker.journal.reader(&stream, from) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if scan {
        loop {
            match reader.poll(1024, &mut |r| broker.scan_frame(&name, &r)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(JournalError::Lapped { .. }) => {
                    if let Err(e) = reader.skip_to_oldest() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
    }
    broker.set_dispatched(&stream, reader.position());
    let _ = ready.send(Ok(()));
    drop(ready);
    let idle = Duration::from_micros(broker.config.storage.poll_interval_us.max(50));
    let mut batch: Vec<Arc<Delivery>> = Vec::with_capacity(256);
    let lock = broker.dispatch_lock(&stream);
    // Relaxed: see `Fanout::stop`.
    while !stop.load(Ordering::Relaxed) {
        let subscribers = broker.has_subscribers();
        let polled = reader.poll(256, &mut |r| {
            // Without subscribers only retained frames matter (they update the retained set).
            if !subscribers && !crate::meta::is_retained(r.meta) {
                return;
            }
            if let Some(d) = broker.delivery_of(&name, &r) {
                batch.push(d);
            }
        });
        match polled {
            Ok(0) => std::thread::park_timeout(idle),
            Ok(_) => {
                for d in batch.drain(..) {
                    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let next = d.next_position;
                    broker.dispatch(d);
                    broker.set_dispatched(&stream, next);
                }
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                broker.set_dispatched(&stream, reader.position());
            }
            Err(JournalError::Lapped { requested, oldest }) => {
                log::warn!("stream {stream}: tailer lapped at {requested}, resuming at {oldest}");
                if reader.skip_to_oldest().is_err() {
                    std::thread::park_timeout(idle);
                }
            }
            Err(e) => {
                log::error!("stream {stream}: read failed: {e}");
                std::thread::park_timeout(Duration::from_millis(100));
            }
        }
    }
}
