//! A description of the machine a run was made on, for the summary.

use serde::{Deserialize, Serialize};

use crate::pinning::PinRecord;
use crate::timer::TimerOverhead;

/// The machine and the conditions of a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cores: usize,
    /// Logical CPUs this process could run on when the run started (before pinning).
    pub cores_allowed: usize,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Whether /proc/cpuinfo shows the `hypervisor` flag (a VM: expect host noise in the tail).
    pub virtualized: bool,
    /// Whether the TSC is invariant (`constant_tsc` and `nonstop_tsc`).
    pub invariant_tsc: bool,
    /// True when every pinning request of the run succeeded.
    pub pinning_obtained: bool,
    /// Every pinning request of the run and its outcome.
    pub pinning: Vec<PinRecord>,
    /// What the clock itself costs per timed interval.
    pub timer_overhead: TimerOverhead,
}

impl Machine {
    /// Describes this machine; `pinning` and `timer_overhead` come from the run.
    pub fn describe(pinning: Vec<PinRecord>, timer_overhead: TimerOverhead) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags").unwrap_or_default();
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Machine {
            cpu_model: field("model name").unwrap_or_else(|| "unknown".to_string()),
            cores: online.max(1),
            cores_allowed: cores,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string()),
            virtualized: has("hypervisor"),
            invariant_tsc: has("constant_tsc") && has("nonstop_tsc"),
            pinning_obtained: !pinning.is_empty() && pinning.iter().all(|p| p.obtained),
            pinning,
            timer_overhead,
        }
    }
}
