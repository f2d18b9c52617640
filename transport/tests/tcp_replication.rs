//! TCP replication between ringway-core streams on both socket backends: byte-identical replicas
//! while the receiver is stopped and restarted mid-stream, and the fallback to plain sockets where
//! io_uring is refused (a seccomp filter on the test's threads, as a container's would be).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringway_transport::io::Backend;
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::tcp::{
    uring_available, TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig,
};
use ringway_transport::udp::{ReceiverStats, SenderStats};

fn backends() -> Vec<Backend> {
    match uring_available() {
        Ok(()) => vec![Backend::Plain, Backend::Uring],
        Err(why) => {
            eprintln!("io_uring unavailable ({why}): testing plain sockets only");
            vec![Backend::Plain]
        }
    }
}

fn start_receiver(
    root: &Path,
    at: SocketAddr,
    backend: Backend,
) -> (Running<ReceiverStats>, SocketAddr, Backend) {
    let mut cfg = TcpReceiverConfig::new(at);
    cfg.backend = backend;
    let mut r = TcpReceiver::new(Box::new(CoreStore::new(root, None)), cfg).unwrap();
    let (addr, used) = (r.local_addr().unwrap(), r.backend());
    let stats = r.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || r.run(&s2));
    let running = Running {
        stop,
        handle: Some(handle),
        stats,
    };
    (running, addr, used)
}

fn start_sender(
    root: &Path,
    name: &str,
    to: SocketAddr,
    backend: Backend,
) -> (Running<SenderStats>, Backend) {
    let mut cfg = TcpSenderConfig::new(to);
    cfg.backend = backend;
    cfg.backoff.initial = Duration::from_millis(20);
    cfg.backoff.max = Duration::from_millis(200);
    let mut s = TcpSender::new(Box::new(CoreSource::open(root, name).unwrap()), cfg);
    let used = s.backend();
    let stats = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || s.run(&s2));
    let running = Running {
        stop,
        handle: Some(handle),
        stats,
    };
    (running, used)
}

/// Replicates `n` messages written while the sender runs; the receiver is stopped at half way,
/// more is written, and a new receiver on the same replica root takes over.
fn replicate_with_receiver_restart(backend: Backend, n: u64) {
    let proot = temp_root();
    let rroot = temp_root();
    let p = primary(proot.path(), "orders");
    let mut w = p.writer().unwrap();
    let (rx, addr, used) = start_receiver(rroot.path(), "127.0.0.1:0".parse().unwrap(), backend);
    assert_eq!(used, backend);
    let (tx, used) = start_sender(proot.path(), "orders", addr, backend);
    assert_eq!(used, backend);
    for i in 0..n / 2 {
        w.append(&payload(i)).unwrap();
    }
    wait_replica(
        rroot.path(),
        "orders",
        p.tail().0 / 2,
        Duration::from_secs(60),
    );
    rx.stop().unwrap();
    for i in n / 2..n {
        w.append(&payload(i)).unwrap();
    }
    let (rx, _, _) = start_receiver(rroot.path(), addr, backend);
    let end = p.tail().0;
    wait_replica(rroot.path(), "orders", end, Duration::from_secs(60));
    assert_eq!(rx.stats.duplicates.load(Ordering::Relaxed), 0);
    let sessions = tx.stats.sessions.load(Ordering::Relaxed);
    tx.stop().unwrap();
    rx.stop().unwrap();
    assert!(
        sessions >= 2,
        "the sender reconnected ({sessions} sessions)"
    );
    assert_identical(
        &proot.path().join("orders"),
        &rroot.path().join("orders"),
        end,
    );
    check_replica_messages(rroot.path(), "orders", n);
}

#[test]
fn tcp_receiver_restart_resumes_byte_identical_on_every_backend() {
    for backend in backends() {
        replicate_with_receiver_restart(backend, 100_000);
    }
}

/// Makes `io_uring_setup` fail with ENOSYS for the calling thread and the threads it creates
/// afterwards, as a container's seccomp profile does; other threads of the process are not
/// affected.
fn refuse_io_uring_on_this_thread() {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    // struct seccomp_data: nr at offset 0, arch at offset 4.
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 4),
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            AUDIT_ARCH_X86_64,
        ),
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            libc::SYS_io_uring_setup as u32,
        ),
        ins(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0, "no_new_privs: {}", std::io::Error::last_os_error());
    // SAFETY: `prog` points at `filter`, a valid BPF program that outlives the call (the kernel
    // copies it); PR_SET_SECCOMP applies to the calling thread only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

#[test]
fn tcp_falls_back_to_plain_sockets_where_io_uring_is_refused() {
    std::thread::spawn(|| {
        refuse_io_uring_on_this_thread();
        let why = uring_available().unwrap_err();
        assert!(why.contains("io_uring_setup"), "{why}");
        // Insisting on io_uring is an error, not a silent downgrade.
        let mut forced = TcpReceiverConfig::new("127.0.0.1:0".parse().unwrap());
        forced.backend = Backend::Uring;
        let root = temp_root();
        assert!(TcpReceiver::new(Box::new(CoreStore::new(root.path(), None)), forced).is_err());
        // Auto falls back (with a logged warning) and replicates all the same.
        let proot = temp_root();
        let rroot = temp_root();
        let p = primary(proot.path(), "fallback");
        let mut w = p.writer().unwrap();
        for i in 0..5000 {
            w.append(&payload(i)).unwrap();
        }
        let (rx, addr, used) =
            start_receiver(rroot.path(), "127.0.0.1:0".parse().unwrap(), Backend::Auto);
        assert_eq!(used, Backend::Plain);
        let (tx, used) = start_sender(proot.path(), "fallback", addr, Backend::Auto);
        assert_eq!(used, Backend::Plain);
        let end = p.tail().0;
        wait_replica(rroot.path(), "fallback", end, Duration::from_secs(60));
        tx.stop().unwrap();
        rx.stop().unwrap();
        assert_identical(
            &proot.path().join("fallback"),
            &rroot.path().join("fallback"),
            end,
        );
        check_replica_messages(rroot.path(), "fallback", 5000);
    })
    .join()
    .unwrap();
}
