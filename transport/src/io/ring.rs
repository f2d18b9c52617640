//! io_uring plumbing shared by the UDP and TCP rings: set-up, submission and bounded waits.

use std::time::Duration;

use io_uring::{types, IoUring};

/// Builds a ring of `entries` submission entries and four times as many completion entries,
/// running completions cooperatively where the kernel allows it (Linux 5.19+): a busy-polling
/// thread is not interrupted for each completion; it sees `IORING_SQ_TASKRUN` and enters the
/// kernel to run them. Older kernels refuse the flags: a plain ring then. Returns the ring and
/// whether it is cooperative.
pub(crate) fn build(entries: u32) -> std::io::Result<(IoUring, bool)> {
    match IoUring::builder()
        .setup_cqsize(entries * 4)
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries)
    {
        Ok(r) => Ok((r, true)),
        Err(_) => Ok((
            IoUring::builder()
                .setup_cqsize(entries * 4)
                .build(entries)?,
            false,
        )),
    }
}

/// One `io_uring_enter` that submits what is queued, retried on `EINTR`. Returns `false` when
/// the completion queue is full (`EBUSY`): the caller reaps completions and calls again.
pub(crate) fn submit(ring: &IoUring) -> std::io::Result<bool> {
    loop {
        match ring.submit() {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// One `io_uring_enter` that submits what is queued and waits up to `timeout` for a completion.
/// A timeout, a signal or a full completion queue all just end the wait.
pub(crate) fn wait(ring: &IoUring, timeout: Duration) -> std::io::Result<()> {
    let ts = types::Timespec::new()
        .sec(timeout.as_secs())
        .nsec(timeout.subsec_nanos());
    let args = types::SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}
