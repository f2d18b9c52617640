//! Agents: duty cycles, stopping, error and panic propagation, pinning, blocking idles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringway_core::agent::{available_cores, AgentError, AgentOptions, AgentRunner, StopSignal};
use ringway_core::idle::IdleStrategy;
use ringway_core::typed::{Publisher, Subscriber, TypedError};
use ringway_core::{Start, Stream, StreamConfig};

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("duty cycle failed at cycle {0}")]
struct Boom(u64);

#[test]
fn runs_until_stopped_and_counts_work() {
    for idle in [
        IdleStrategy::BusySpin,
        IdleStrategy::Yield,
        IdleStrategy::Backoff,
        IdleStrategy::Sleep(Duration::from_micros(50)),
    ] {
        let cycles = Arc::new(AtomicU64::new(0));
        let c = cycles.clone();
        let runner = AgentRunner::spawn(AgentOptions::new("counter").idle(idle), move || {
            let n = c.fetch_add(1, Ordering::Relaxed);
            // Every other cycle does two units of work.
            Ok::<usize, Boom>(if n.is_multiple_of(2) { 2 } else { 0 })
        })
        .unwrap();
        while cycles.load(Ordering::Relaxed) < 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = runner.stop().unwrap();
        let total = cycles.load(Ordering::Relaxed);
        assert_eq!(stats.duty_cycles, total, "{idle:?}");
        assert_eq!(stats.idle_cycles, total / 2, "{idle:?}");
        assert_eq!(stats.work, total.div_ceil(2) * 2, "{idle:?}");
    }
}

#[test]
fn agent_error_ends_the_agent_and_reaches_the_caller() {
    let mut n = 0;
    let runner = AgentRunner::spawn(AgentOptions::new("failing"), move || {
        n += 1;
        if n == 5 {
            Err(Boom(n))
        } else {
            Ok(1)
        }
    })
    .unwrap();
    match runner.join() {
        Err(AgentError::Failed { name, source }) => {
            assert_eq!(name, "failing");
            assert_eq!(source, Boom(5));
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn panics_are_reported() {
    let runner = AgentRunner::spawn(AgentOptions::new("panicky"), || -> Result<usize, Boom> {
        panic!("bad tick")
    })
    .unwrap();
    match runner.join() {
        Err(AgentError::Panicked { name, message }) => {
            assert_eq!(name, "panicky");
            assert_eq!(message, "bad tick");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn agent_can_stop_itself() {
    let stop = StopSignal::new();
    let inner = stop.clone();
    let mut n = 0u64;
    let runner = AgentRunner::spawn(AgentOptions::new("finite").stop_signal(stop), move || {
        n += 1;
        if n == 1000 {
            inner.stop();
        }
        Ok::<usize, Boom>(1)
    })
    .unwrap();
    let stats = runner.join().unwrap();
    assert_eq!(stats.duty_cycles, 1000);
}

#[test]
fn pinning_to_a_missing_core_is_an_error() {
    let available = available_cores();
    let missing = available.iter().max().map_or(0, |m| m + 1);
    let err = AgentRunner::spawn(AgentOptions::new("nowhere").core(missing), || {
        Ok::<usize, Boom>(0)
    })
    .unwrap_err();
    match &err {
        AgentError::CoreUnavailable {
            name,
            core,
            available: a,
        } => {
            assert_eq!(name, "nowhere");
            assert_eq!(*core, missing);
            assert_eq!(*a, available);
        }
        other => panic!("expected CoreUnavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("not available"), "{err}");
}

#[test]
fn pinned_agent_runs_only_on_its_core() {
    let core = *available_cores().first().expect("at least one core");
    let seen = Arc::new(std::sync::Mutex::new(None));
    let out = seen.clone();
    let stop = StopSignal::new();
    let inner = stop.clone();
    let runner = AgentRunner::spawn(
        AgentOptions::new("pinned").core(core).stop_signal(stop),
        move || {
            // The affinity mask of the agent's own thread.
            *out.lock().unwrap() = Some(available_cores());
            inner.stop();
            Ok::<usize, Boom>(1)
        },
    )
    .unwrap();
    assert_eq!(runner.core(), Some(core));
    runner.join().unwrap();
    assert_eq!(seen.lock().unwrap().clone(), Some(vec![core]));
}

#[test]
fn block_needs_something_to_block_on() {
    let err = AgentRunner::spawn(AgentOptions::new("b").idle(IdleStrategy::BLOCK), || {
        Ok::<usize, Boom>(0)
    })
    .unwrap_err();
    assert!(matches!(err, AgentError::BlockNeedsWaiter { .. }), "{err}");
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Tick {
    seq: u64,
}
ringway_core::message!(Tick, type_id = 0x7469_636b, schema = 1);

#[test]
fn blocking_subscriber_agent_is_woken_by_commits_and_stops() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "t",
        &StreamConfig::default().segment_size(1 << 20),
    )
    .unwrap();
    let sub = Subscriber::<Tick>::new(&s, Start::Beginning).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let mut expected = 0u64;
    let runner = AgentRunner::spawn_waiting(
        AgentOptions::new("ticks").idle(IdleStrategy::Block(Duration::from_millis(20))),
        sub,
        move |sub| {
            let n = sub.poll(64, |t| {
                assert_eq!(t.seq.to_native(), expected);
                expected += 1;
            })?;
            r.fetch_add(n as u64, Ordering::Relaxed);
            Ok::<usize, TypedError>(n)
        },
    )
    .unwrap();
    let mut p = Publisher::<Tick>::new(s.writer().unwrap());
    for seq in 0..50 {
        p.send(&Tick { seq }).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    while received.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = runner.stop().unwrap();
    assert_eq!(stats.work, 50);
    assert!(stats.idle_cycles > 0, "the agent blocked between ticks");
}

#[test]
fn idle_strategies_parse() {
    assert_eq!(
        "spin".parse::<IdleStrategy>().unwrap(),
        IdleStrategy::BusySpin
    );
    assert_eq!(
        "block:5".parse::<IdleStrategy>().unwrap(),
        IdleStrategy::Block(Duration::from_millis(5))
    );
    assert!("block:0".parse::<IdleStrategy>().is_err());
    assert!("sleep:x".parse::<IdleStrategy>().is_err());
}
