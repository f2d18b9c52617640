//! The threads of a one-directional measurement (`throughput`, `oneway`, `fanout`): writers pinned to the first
//! core, readers to the second, each building its own endpoint of a [`Channel`] (one at a time, so that systems
//! which create shared resources on first use never race), meeting at a [`Gate`] before the measured code runs
//! and again after it (endpoints live until every party is done, so no reader loses a sender mid-read).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::pinning::{pin_current, PinRecord};
use crate::systems::channel::{ChanCtx, Channel, Rx, Tx};

/// Message of the error a party gets when another party failed.
const ABORTED: &str = "another participant failed";

/// A reusable rendezvous of a fixed number of threads, with a timeout, that any party can abort (so a failed
/// party turns the others' waits into errors instead of hangs).
pub struct Gate {
    parties: usize,
    timeout: Duration,
    state: Mutex<GateState>,
    cv: Condvar,
}

struct GateState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

impl Gate {
    /// A gate for `parties` threads whose waits fail after `timeout`.
    pub fn new(parties: usize, timeout: Duration) -> Self {
        Gate {
            parties,
            timeout,
            state: Mutex::new(GateState {
                arrived: 0,
                generation: 0,
                aborted: false,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every party has arrived; fails when one aborted or after the timeout.
    pub fn wait(&self, system: &'static str, what: &str) -> Result<()> {
        let mut s = self.lock();
        if s.aborted {
            return Err(BenchError::system(system, ABORTED));
        }
        s.arrived += 1;
        if s.arrived == self.parties {
            s.arrived = 0;
            s.generation += 1;
            self.cv.notify_all();
            return Ok(());
        }
        let generation = s.generation;
        let deadline = Instant::now() + self.timeout;
        while s.generation == generation {
            if s.aborted {
                return Err(BenchError::system(system, ABORTED));
            }
            let now = Instant::now();
            if now >= deadline {
                s.aborted = true;
                self.cv.notify_all();
                return Err(BenchError::Timeout {
                    what: format!("{system}: {what}"),
                    secs: self.timeout.as_secs(),
                });
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Makes every current and future wait fail.
    pub fn abort(&self) {
        self.lock().aborted = true;
        self.cv.notify_all();
    }
}

/// Why `C` cannot run `ctx`, as the error that makes its row `skipped: REASON`: `lossy` when the system loses
/// messages and the scenario needs every one (the reason that holds at every size), else what
/// [`Channel::unsupported`] says.
pub fn check<C: Channel>(ctx: &ChanCtx, lossy: Option<&str>) -> Result<()> {
    match (lossy, C::unsupported(ctx)) {
        (Some(why), _) if C::LOSSY => Err(BenchError::Usage(why.to_string())),
        (_, Some(why)) => Err(BenchError::Usage(why)),
        _ => Ok(()),
    }
}

/// What the parties returned, and where they ran.
pub struct Outcome<WO, RO> {
    /// Each writer's result, in index order.
    pub writers: Vec<WO>,
    /// Each reader's result, in index order.
    pub readers: Vec<RO>,
    /// Every pinning request and its outcome.
    pub pins: Vec<PinRecord>,
}

/// Runs `ctx.writers` writers (pinned to `core_a`) and `ctx.readers` readers (pinned to `core_b`) of channel `C`.
/// Each party builds its endpoint, waits at the gate, runs its body (which may use the gate for further phases;
/// every party must then wait there the same number of times), waits at the gate again and drops its endpoint.
/// The first real error of any party is the result (not the "another participant failed" of the others).
/// `ctx.dir` is removed when the run ends.
pub fn run<C, W, R, WO, RO>(
    ctx: &ChanCtx,
    core_a: Option<usize>,
    core_b: Option<usize>,
    writer: W,
    reader: R,
) -> Result<Outcome<WO, RO>>
where
    C: Channel,
    W: Fn(usize, &mut C::Tx, &Gate) -> Result<WO> + Sync,
    R: Fn(usize, &mut C::Rx, &Gate) -> Result<RO> + Sync,
    WO: Send,
    RO: Send,
{
    let _cleanup = RemoveOnDrop(&ctx.dir);
    let shared = C::open(ctx)?;
    let gate = Gate::new(ctx.writers + ctx.readers, ctx.timeout);
    let building = Mutex::new(());
    let (shared, gate, building, writer, reader) = (&shared, &gate, &building, &writer, &reader);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..ctx.readers)
            .map(|k| {
                s.spawn(move || {
                    party(
                        &format!("reader-{k}"),
                        core_b,
                        gate,
                        || {
                            let _one_at_a_time = building.lock().unwrap_or_else(|p| p.into_inner());
                            C::rx(shared, ctx, k)
                        },
                        Rx::settle,
                        |rx| reader(k, rx, gate),
                        C::NAME,
                    )
                })
            })
            .collect();
        let writers: Vec<_> = (0..ctx.writers)
            .map(|w| {
                s.spawn(move || {
                    party(
                        &format!("writer-{w}"),
                        core_a,
                        gate,
                        || {
                            let _one_at_a_time = building.lock().unwrap_or_else(|p| p.into_inner());
                            C::tx(shared, ctx, w)
                        },
                        Tx::settle,
                        |tx| writer(w, tx, gate),
                        C::NAME,
                    )
                })
            })
            .collect();
        let mut pins = Vec::new();
        let mut errs = Vec::new();
        let rs = join_all(readers, "reader", C::NAME, &mut pins, &mut errs);
        let ws = join_all(writers, "writer", C::NAME, &mut pins, &mut errs);
        match combine(C::NAME, errs) {
            Some(e) => Err(e),
            None => Ok(Outcome {
                writers: ws.into_iter().flatten().collect(),
                readers: rs.into_iter().flatten().collect(),
                pins,
            }),
        }
    })
}

/// Removes a system's scratch directory when its run ends (a large run leaves gigabytes of stream files in
/// /dev/shm otherwise, and the next system would run under that memory pressure).
struct RemoveOnDrop<'a>(&'a std::path::Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        // Best effort: the whole scratch directory is removed at the end of the run anyway.
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Joins `handles`, collecting their pinning records and their errors (with the party's role).
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, (PinRecord, Result<T>)>>,
    role: &str,
    system: &'static str,
    pins: &mut Vec<PinRecord>,
    errs: &mut Vec<(String, BenchError)>,
) -> Vec<Option<T>> {
    let mut out = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let r = match h.join() {
            Ok((pin, r)) => {
                pins.push(pin);
                r
            }
            Err(_) => Err(BenchError::system(system, "thread panicked")),
        };
        out.push(r.map_err(|e| errs.push((format!("{role}-{i}"), e))).ok());
    }
    out
}

/// The run's error: the one real error as it is, several real errors together with their parties, or (when
/// every error is another party's failure) that.
fn combine(system: &'static str, errs: Vec<(String, BenchError)>) -> Option<BenchError> {
    let (mut real, secondary): (Vec<_>, Vec<_>) =
        errs.into_iter().partition(|(_, e)| !is_secondary(Some(e)));
    match real.len() {
        0 => secondary.into_iter().next().map(|(_, e)| e),
        1 => real.pop().map(|(_, e)| e),
        _ => Some(BenchError::system(
            system,
            real.iter()
                .map(|(role, e)| format!("{role}: {e}"))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn is_secondary(e: Option<&BenchError>) -> bool {
    matches!(e, Some(BenchError::System { message, .. }) if message == ABORTED)
}

/// One party: pin, build the endpoint, meet, settle, meet, run, meet, drop. Aborts the gate on any error.
fn party<E, O>(
    role: &str,
    core: Option<usize>,
    gate: &Gate,
    build: impl FnOnce() -> Result<E>,
    settle: impl FnOnce(&mut E) -> Result<()>,
    body: impl FnOnce(&mut E) -> Result<O>,
    system: &'static str,
) -> (PinRecord, Result<O>) {
    let pin = pin_current(role, core);
    let r = build().and_then(|mut ep| {
        gate.wait(system, "the other participants to be ready")?;
        settle(&mut ep)?;
        gate.wait(system, "the other participants to connect")?;
        let out = body(&mut ep)?;
        gate.wait(system, "the other participants to finish")?;
        Ok(out)
    });
    if r.is_err() {
        gate.abort();
    }
    (pin, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_lets_all_parties_through_each_round() {
        let gate = Gate::new(3, Duration::from_secs(10));
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| s.spawn(|| (0..4).all(|_| gate.wait("t", "round").is_ok())))
                .collect();
            assert!(hs.into_iter().all(|h| h.join().unwrap()));
        });
    }

    #[test]
    fn an_abort_fails_the_waiting_parties_instead_of_hanging() {
        let gate = Gate::new(2, Duration::from_secs(30));
        std::thread::scope(|s| {
            let waiting = s.spawn(|| gate.wait("t", "the other"));
            std::thread::sleep(Duration::from_millis(20));
            gate.abort();
            let r = waiting.join().unwrap();
            assert!(is_secondary(r.as_ref().err()), "{r:?}");
        });
        assert!(gate.wait("t", "again").is_err());
    }

    #[test]
    fn a_lone_party_times_out() {
        let gate = Gate::new(2, Duration::from_millis(50));
        assert!(matches!(
            gate.wait("t", "nobody"),
            Err(BenchError::Timeout { .. })
        ));
    }

    #[test]
    fn the_real_error_wins_over_the_others_reactions() {
        let aborted = || BenchError::system("t", ABORTED);
        let e = combine(
            "t",
            vec![
                ("writer-0".into(), aborted()),
                ("reader-0".into(), BenchError::system("t", "broken")),
            ],
        );
        assert_eq!(e.unwrap().to_string(), "t: broken");
        assert!(combine("t", vec![]).is_none());
    }
}
