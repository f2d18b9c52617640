//! Pinning the calling thread to a core, and recording whether it worked.

use serde::{Deserialize, Serialize};

/// The outcome of one pinning request, as reported in the summary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinRecord {
    /// Which participant (e.g. `ping`, `echo`, `writer`, `reader-2`).
    pub role: String,
    /// The core asked for; `None` when pinning was disabled.
    pub core: Option<usize>,
    /// Whether the affinity call succeeded and the thread then ran on that core.
    pub obtained: bool,
    /// The CPU the thread was seen on right after the request.
    pub seen_on_cpu: Option<usize>,
    /// Why pinning failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Pins the calling thread to `core` (or leaves it free when `None`) and reports what happened.
pub fn pin_current(role: &str, core: Option<usize>) -> PinRecord {
    let Some(core) = core else {
        return PinRecord {
            role: role.to_string(),
            core: None,
            obtained: false,
            seen_on_cpu: current_cpu(),
            error: Some("pinning disabled (--no-pin)".to_string()),
        };
    };
    // Threads and child processes inherit the affinity of whoever started them (the pinned main thread), so the
    // target core is checked against the CPUs online, not against the current affinity set.
    let online = online_cpus();
    if core >= online || core >= libc::CPU_SETSIZE as usize {
        return PinRecord {
            role: role.to_string(),
            core: Some(core),
            obtained: false,
            seen_on_cpu: current_cpu(),
            error: Some(format!("core {core} does not exist ({online} CPUs online)")),
        };
    }
    let ok = set_affinity(core);
    // Give the scheduler a chance to migrate us before checking where we run.
    std::thread::yield_now();
    let seen = current_cpu();
    let obtained = ok && seen == Some(core);
    PinRecord {
        role: role.to_string(),
        core: Some(core),
        obtained,
        seen_on_cpu: seen,
        error: if obtained {
            None
        } else if !ok {
            Some("sched_setaffinity failed".to_string())
        } else {
            Some(format!("affinity set but thread seen on cpu {seen:?}"))
        },
    }
}

/// Restricts the calling thread to `core`.
fn set_affinity(core: usize) -> bool {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` < CPU_SETSIZE was checked by the caller, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: pid 0 is the calling thread; the pointer and size describe the live, initialised `set`.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Number of CPUs online.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The CPU the calling thread runs on right now.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads per-thread kernel state.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The two cores a two-party scenario uses by default: the first two of this process's affinity set.
pub fn default_cores() -> (Option<usize>, Option<usize>) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    (ids.first().map(|c| c.id), ids.get(1).map(|c| c.id))
}
