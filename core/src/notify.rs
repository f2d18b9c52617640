//! Cross-process wake-ups for blocked readers, at no cost to writers when nobody is blocked.
//!
//! A blocked reader registers in the stream's `waiters` count, then issues a process-wide memory
//! barrier (`membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`), re-checks for data and sleeps on the
//! futex word in the metadata mapping. A writer, after each commit, loads `waiters` with a plain
//! load and only when it is non-zero bumps the futex word and calls `FUTEX_WAKE`.
//!
//! Why the writer needs no fence: this is the asymmetric Dekker pattern `membarrier(2)` exists
//! for. The reader's barrier forces every running thread of every registered process to execute a
//! full memory barrier, so either the writer's later load of `waiters` sees the reader's increment
//! (and wakes it), or the writer's commit store is visible to the reader's re-check. Writers
//! register for expedited barriers once per process. Where membarrier is unavailable, readers sleep
//! at most 1 ms at a time instead, so a missed wake-up costs at most that.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        ) == 0
    }
}

/// Registers this process for expedited global barriers (writers call it once; idempotent).
pub(crate) fn register_writer_process() {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED.get_or_init(|| membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED));
}

/// Full barrier in every registered writer process. `false` if unsupported.
pub(crate) fn global_barrier() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    let supported = *SUPPORTED.get_or_init(|| membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED));
    supported && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
}

/// Sleeps while `word == expected`, at most `timeout`.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in a shared mapping that outlives the call; FUTEX_WAIT
    // (not PRIVATE) is required because other processes wake it; `ts` lives across the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: as for `futex_wait`; FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// Called by writers after a commit: wakes blocked readers if there are any.
#[inline]
pub(crate) fn wake_waiters(n: &crate::meta::NotifyLine) {
    // Relaxed: see the module docs; the readers' membarrier provides the ordering.
    if n.waiters.load(Ordering::Relaxed) != 0 {
        wake_all(n);
    }
}

#[cold]
fn wake_all(n: &crate::meta::NotifyLine) {
    n.futex.fetch_add(1, Ordering::Release);
    futex_wake(&n.futex);
}
