//! Process identity and liveness, used to tell a live writer from a dead one.
//!
//! A process is identified by its pid and its start time (clock ticks since boot, field 22 of
//! `/proc/PID/stat`), so a recycled pid is not mistaken for the writer that died.

/// This process's id.
pub fn current_pid() -> u32 {
    std::process::id()
}

/// Start time of process `pid` in clock ticks since boot, if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; field 22 is the 20th from here.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Start time of this process.
pub fn current_start_time() -> u64 {
    start_time(current_pid()).unwrap_or(0)
}

/// Whether process `pid` that started at `start` (0 = unknown) is still running.
pub fn is_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission; it sends nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match start_time(pid) {
        Some(s) => start == 0 || s == start,
        // Exists (kill succeeded) but /proc is unreadable: assume alive.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_bogus_one_is_not() {
        assert!(is_alive(current_pid(), current_start_time()));
        assert!(!is_alive(current_pid(), current_start_time() + 1));
        assert!(!is_alive(0, 0));
        assert!(!is_alive(u32::MAX / 2, 0));
    }
}
