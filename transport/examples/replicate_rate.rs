//! Replication rate over UDP loopback between two ringway-core streams in /dev/shm.
//!
//! `cargo run --release -p ringway-transport --example replicate_rate -- [MESSAGES] [SIZE] [LOSS] [catchup|live]`
//!
//! catchup: the primary is written first, then replicated (catch-up rate after an outage);
//! live: the writer appends while replication runs. Prints messages/s from the first frame to
//! the replica reaching the primary's tail. A diagnostic, not a benchmark harness (see bench/).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_core::{Stream, StreamConfig};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::loss::{LossConfig, LossRates};
use ringway_transport::udp::{ReceiverConfig, SenderConfig, UdpReceiver, UdpSender};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(Ok(2_000_000), |s| s.parse())?;
    let size: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let loss: f64 = args.get(3).map_or(Ok(0.0), |s| s.parse())?;
    let live = args.get(4).is_some_and(|s| s == "live");
    let proot = tempfile::tempdir_in("/dev/shm")?;
    let rroot = tempfile::tempdir_in("/dev/shm")?;
    let cfg = StreamConfig::default().segment_size(64 << 20);
    let p = Stream::create(proot.path(), "rate", &cfg)?;
    let mut w = p.writer()?;
    let msg = vec![7u8; size];
    if !live {
        for _ in 0..n {
            w.append(&msg)?;
        }
    }
    let lossc = (loss > 0.0).then_some(LossConfig {
        send: LossRates::drop_only(loss),
        recv: LossRates::drop_only(loss),
        seed: 9,
    });
    let mut rc = ReceiverConfig::new("127.0.0.1:0".parse()?);
    rc.loss = lossc;
    rc.idle_wait = Duration::from_micros(100);
    if std::env::var("RW_BACKEND").is_ok_and(|v| v == "plain") {
        rc.udp.backend = ringway_transport::io::Backend::Plain;
    }
    let backend = rc.udp.backend;
    let mut r = UdpReceiver::new(Box::new(CoreStore::new(rroot.path(), None)), rc)?;
    let mut sc = SenderConfig::new(r.local_addr()?);
    sc.loss = lossc;
    sc.idle_wait = Duration::ZERO;
    sc.udp.backend = backend;
    let mut s = UdpSender::new(Box::new(CoreSource::open(proot.path(), "rate")?), sc)?;
    println!(
        "backend {:?}, {n} messages of {size} bytes, loss {loss}, {}",
        s.backend(),
        if live { "live" } else { "catch-up" }
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (stop.clone(), stop.clone());
    let rs = r.stats();
    let hr = std::thread::spawn(move || r.run(&a));
    let ss = s.stats();
    let hs = std::thread::spawn(move || s.run(&b));
    let t0 = Instant::now();
    if live {
        for _ in 0..n {
            w.append(&msg)?;
        }
    }
    let end = p.tail().0;
    while rs.position.load(Ordering::Relaxed) < end {
        std::thread::sleep(Duration::from_micros(200));
        if std::env::var("RW_DEBUG").is_ok() && t0.elapsed().as_millis() % 1000 < 1 {
            eprintln!("{:?} {rs:?} {ss:?}", t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err("timed out".into());
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    println!("sender: {ss:?}\nreceiver: {rs:?}");
    stop.store(true, Ordering::Relaxed);
    hs.join().map_err(|_| "sender panicked")??;
    hr.join().map_err(|_| "receiver panicked")??;
    println!(
        "{n} messages in {dt:.3} s: {:.2} M messages/s, {:.0} MB/s of frames; naks sent {}, duplicates {}",
        n as f64 / dt / 1e6,
        end as f64 / dt / 1e6,
        rs.naks.load(Ordering::Relaxed),
        rs.duplicates.load(Ordering::Relaxed)
    );
    Ok(())
}
