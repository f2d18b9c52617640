use super::*;
use std::time::Instant;

fn echo_round(backend: Backend, busy_poll: bool) {
    let opts = UdpOptions {
        backend,
        busy_poll,
        ..UdpOptions::default()
    };
    let mut a = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let mut b = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    assert_eq!(a.backend(), backend);
    let b_addr = b.local_addr().unwrap();
    let a_addr = a.local_addr().unwrap();
    // 1000 datagrams a -> b, echoed back b -> a, in batches.
    let total = 1000usize;
    let mut sent = 0;
    let mut echoed = Vec::new();
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while back.len() < total {
        assert!(
            Instant::now() < deadline,
            "echo stalled at {} sent {} a={:?} b={:?}",
            back.len(),
            sent,
            a.counters(),
            b.counters()
        );
        while sent < total && sent < back.len() + 100 {
            let msg = (sent as u32).to_le_bytes();
            a.send_to(&msg, b_addr).unwrap();
            sent += 1;
        }
        a.poll(Duration::ZERO, &mut |d, _| back.push(d.to_vec()))
            .unwrap();
        b.poll(Duration::from_millis(1), &mut |d, from| {
            assert_eq!(from, a_addr);
            echoed.push(d.to_vec());
        })
        .unwrap();
        for d in std::mem::take(&mut echoed) {
            b.send_to(&d, a_addr).unwrap();
        }
        b.poll(Duration::ZERO, &mut |d, _| echoed.push(d.to_vec()))
            .unwrap();
        a.poll(Duration::from_millis(1), &mut |d, _| back.push(d.to_vec()))
            .unwrap();
    }
    let mut got: Vec<u32> = back
        .iter()
        .map(|d| u32::from_le_bytes(d[..4].try_into().unwrap()))
        .collect();
    got.sort_unstable();
    got.dedup();
    // Loopback UDP with large buffers and at most 100 in flight does not lose datagrams.
    assert_eq!(got.len(), total);
    let c = a.counters();
    assert!(c.sent >= total as u64 - 256, "{c:?}");
    assert_eq!(c.received, total as u64);
}

#[test]
fn uring_echo_over_loopback() {
    if let Err(why) = uring_available() {
        eprintln!("io_uring unavailable here ({why}); test skipped");
        return;
    }
    echo_round(Backend::Uring, false);
}

#[test]
fn uring_busy_poll_echo_over_loopback() {
    if uring_available().is_err() {
        return;
    }
    echo_round(Backend::Uring, true);
}

#[test]
fn plain_echo_over_loopback() {
    echo_round(Backend::Plain, false);
}

#[test]
fn lone_datagram_on_idle_ring_leaves_directly_and_several_share_one_enter() {
    if uring_available().is_err() {
        return;
    }
    let opts = UdpOptions {
        backend: Backend::Uring,
        ..UdpOptions::default()
    };
    let mut a = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let b1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
    let c0 = a.counters();
    // One datagram on an idle ring: one direct system call, counted as sent before any poll
    // (a ring send is counted only when its completion is reaped).
    a.send_to(b"one", b1.local_addr().unwrap()).unwrap();
    a.flush().unwrap();
    let c1 = a.counters();
    assert_eq!(
        (c1.sent - c0.sent, c1.syscalls - c0.syscalls),
        (1, 1),
        "{c1:?}"
    );
    // Two datagrams to two destinations (two send slots): both in one io_uring_enter, counted
    // when reaped.
    a.send_to(b"two", b1.local_addr().unwrap()).unwrap();
    a.send_to(b"three", b2.local_addr().unwrap()).unwrap();
    a.flush().unwrap();
    let c2 = a.counters();
    assert_eq!(c2.syscalls - c1.syscalls, 1, "{c2:?}");
    assert_eq!(c2.sent, c1.sent, "{c2:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.counters().sent < c1.sent + 2 && Instant::now() < deadline {
        a.poll(Duration::from_millis(1), &mut |_, _| {}).unwrap();
    }
    assert_eq!(a.counters().sent, c1.sent + 2);
    let mut buf = [0u8; 16];
    for (sock, want) in [(&b1, &b"one"[..]), (&b1, b"two"), (&b2, b"three")] {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}

#[test]
fn busy_poll_receive_reads_bursts_in_batches_and_drops_oversized() {
    for backend in [Backend::Plain, Backend::Uring] {
        if backend == Backend::Uring && uring_available().is_err() {
            continue;
        }
        let opts = UdpOptions {
            backend,
            max_datagram: 100,
            busy_poll: true,
            ..UdpOptions::default()
        };
        let mut r = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let to = r.local_addr().unwrap();
        assert_eq!(r.poll(Duration::ZERO, &mut |_, _| {}).unwrap(), 0);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = 200u32;
        s.send_to(&[0u8; 101], to).unwrap();
        for i in 0..total {
            s.send_to(&i.to_le_bytes(), to).unwrap();
            if i == 100 {
                s.send_to(&[0u8; 500], to).unwrap();
            }
        }
        let before = r.counters().syscalls;
        let mut got = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < total as usize && Instant::now() < deadline {
            r.poll(Duration::ZERO, &mut |d, from| {
                assert_eq!(from, s.local_addr().unwrap());
                got.push(u32::from_le_bytes(d.try_into().unwrap()))
            })
            .unwrap();
        }
        assert_eq!(got, (0..total).collect::<Vec<_>>(), "{backend:?}");
        let c = r.counters();
        assert_eq!(c.truncated, 2, "{backend:?} {c:?}");
        // Up to 16 datagrams per call once they keep coming, not one call per datagram.
        let calls = c.syscalls - before;
        assert!(
            calls <= 30,
            "{backend:?}: {calls} calls for {total} datagrams"
        );
    }
}

#[test]
fn uring_batches_sends_into_few_system_calls() {
    if uring_available().is_err() {
        return;
    }
    let opts = UdpOptions {
        backend: Backend::Uring,
        ..UdpOptions::default()
    };
    let mut a = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let b = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let to = b.local_addr().unwrap();
    let before = a.counters().syscalls;
    for i in 0..200u32 {
        a.send_to(&i.to_le_bytes(), to).unwrap();
    }
    a.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
    let used = a.counters().syscalls - before;
    assert!(used <= 2, "200 sends took {used} system calls");
    // Idle polls reap shared memory only.
    let before = a.counters().syscalls;
    for _ in 0..1000 {
        a.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
    }
    // Send completions may re-arm nothing; at most a handful of submits for late completions.
    assert!(a.counters().syscalls - before <= 2);
}

#[test]
fn oversized_datagram_is_dropped_and_counted() {
    for backend in [Backend::Plain, Backend::Uring] {
        if backend == Backend::Uring && uring_available().is_err() {
            continue;
        }
        let small = UdpOptions {
            backend,
            max_datagram: 100,
            ..UdpOptions::default()
        };
        let mut r = open_udp("127.0.0.1:0".parse().unwrap(), &small).unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = r.local_addr().unwrap();
        s.send_to(&[1u8; 500], to).unwrap();
        s.send_to(&[2u8; 50], to).unwrap();
        let mut got = vec![];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.is_empty() && Instant::now() < deadline {
            r.poll(Duration::from_millis(10), &mut |d, _| got.push(d.len()))
                .unwrap();
        }
        assert_eq!(got, vec![50], "{backend:?}");
        assert_eq!(r.counters().truncated, 1, "{backend:?}");
    }
}

#[test]
fn socket_buffer_is_enlarged() {
    let s = open_udp("127.0.0.1:0".parse().unwrap(), &UdpOptions::default()).unwrap();
    let b = s.recv_buffer_size().unwrap();
    eprintln!("SO_RCVBUF {b}");
    assert!(b >= 1 << 20, "{b}");
}

#[test]
fn uring_receive_survives_more_datagrams_than_buffers() {
    if uring_available().is_err() {
        return;
    }
    let opts = UdpOptions {
        backend: Backend::Uring,
        ..UdpOptions::default()
    };
    let mut r = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let to = r.local_addr().unwrap();
    // Arms the multishot receive, then lets far more datagrams arrive than there are buffers:
    // the receive runs out of buffers, ends, and must be re-armed to get the rest.
    assert_eq!(r.poll(Duration::ZERO, &mut |_, _| {}).unwrap(), 0);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let total = 500u32;
    for i in 0..total {
        s.send_to(&i.to_le_bytes(), to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut got = vec![];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < total as usize && Instant::now() < deadline {
        r.poll(Duration::from_millis(10), &mut |d, _| {
            got.push(u32::from_le_bytes(d.try_into().unwrap()))
        })
        .unwrap();
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>());
}

#[test]
fn segmented_sends_arrive_as_the_datagrams_they_hold() {
    if uring_available().is_err() {
        return;
    }
    for rx_backend in [Backend::Plain, Backend::Uring] {
        let uring = UdpOptions {
            backend: Backend::Uring,
            ..UdpOptions::default()
        };
        let rx_opts = UdpOptions {
            backend: rx_backend,
            ..UdpOptions::default()
        };
        let mut tx = open_udp("127.0.0.1:0".parse().unwrap(), &uring).unwrap();
        let mut rx = open_udp("127.0.0.1:0".parse().unwrap(), &rx_opts).unwrap();
        rx.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
        let to = rx.local_addr().unwrap();
        // 150 equal datagrams (more than one segmented send holds), a short one that ends the
        // train, then one of another length.
        let mut sent: Vec<Vec<u8>> = (0..150u32)
            .map(|i| {
                let mut d = vec![(i % 251) as u8; 1000];
                d[..4].copy_from_slice(&i.to_le_bytes());
                d
            })
            .collect();
        sent.push(vec![7; 10]);
        sent.push(vec![9; 1200]);
        for d in &sent {
            tx.send_to(d, to).unwrap();
        }
        tx.flush().unwrap();
        let mut got: Vec<Vec<u8>> = vec![];
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < sent.len() && Instant::now() < deadline {
            rx.poll(Duration::from_millis(10), &mut |d, _| got.push(d.to_vec()))
                .unwrap();
            tx.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
        }
        assert_eq!(got, sent, "{rx_backend:?}");
        let c = tx.counters();
        assert!(c.segmented_sends >= 3, "{c:?}");
        assert_eq!(c.sent, sent.len() as u64, "{c:?}");
    }
}
