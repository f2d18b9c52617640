//! Two network namespaces joined by a veth pair (created and removed by the test; needs root and
//! `ip`). Without them the same scenario runs over loopback, and the test says so.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringway_transport::io::Backend;
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::loss::{LossConfig, LossRates};
use ringway_transport::tcp::{TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig};
use ringway_transport::udp::{ReceiverConfig, SenderConfig, UdpReceiver, UdpSender};

struct Netns {
    a: String,
    b: String,
    dev_a: String,
}

impl Netns {
    /// Namespaces `a` (10.201.x.1) and `b` (10.201.x.2) joined by veth, or None if impossible.
    fn create(tag: &str, subnet: u8) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let id = format!("{}{}", std::process::id() % 100_000, tag);
        let n = Netns {
            a: format!("rwa{id}"),
            b: format!("rwb{id}"),
            dev_a: format!("va{id}"),
        };
        let dev_b = format!("vb{id}");
        let ok = ip(&["netns", "add", &n.a])
            && ip(&["netns", "add", &n.b])
            && ip(&[
                "link", "add", &n.dev_a, "type", "veth", "peer", "name", &dev_b,
            ])
            && ip(&["link", "set", &n.dev_a, "netns", &n.a])
            && ip(&["link", "set", &dev_b, "netns", &n.b])
            && ip(&[
                "-n",
                &n.a,
                "addr",
                "add",
                &format!("10.201.{subnet}.1/24"),
                "dev",
                &n.dev_a,
            ])
            && ip(&[
                "-n",
                &n.b,
                "addr",
                "add",
                &format!("10.201.{subnet}.2/24"),
                "dev",
                &dev_b,
            ])
            && ip(&["-n", &n.a, "link", "set", &n.dev_a, "up"])
            && ip(&["-n", &n.b, "link", "set", &dev_b, "up"])
            && ip(&["-n", &n.a, "link", "set", "lo", "up"])
            && ip(&["-n", &n.b, "link", "set", "lo", "up"]);
        if ok {
            Some(n)
        } else {
            drop(n);
            None
        }
    }

    fn link(&self, up: bool) {
        assert!(ip(&[
            "-n",
            &self.a,
            "link",
            "set",
            &self.dev_a,
            if up { "up" } else { "down" }
        ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair.
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

/// `tcp_backend`: the socket backend of the TCP runs.
fn scenario(udp: bool, subnet: u8, tcp_backend: Backend) {
    let tag = match (udp, tcp_backend) {
        (true, _) => "u",
        (false, Backend::Plain) => "p",
        (false, _) => "t",
    };
    let net = Netns::create(tag, subnet);
    let (host_a, host_b) = match &net {
        Some(n) => {
            eprintln!(
                "running across namespaces {} and {} (veth), link cut for 2 s mid-stream",
                n.a, n.b
            );
            (format!("10.201.{subnet}.1"), format!("10.201.{subnet}.2"))
        }
        None => {
            eprintln!("network namespaces unavailable (not root or no `ip`): running over loopback, without the link cut");
            ("127.0.0.1".to_string(), "127.0.0.1".to_string())
        }
    };
    let ns_a = net.as_ref().map(|n| n.a.clone());
    let ns_b = net.as_ref().map(|n| n.b.clone());
    let proot = temp_root();
    let rroot = temp_root();
    let p = primary(proot.path(), "feed");
    let port = 20_000 + (std::process::id() % 20_000) as u16 + subnet as u16;
    let listen: SocketAddr = format!("{host_b}:{port}").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (rr, pr) = (rroot.path().to_path_buf(), proot.path().to_path_buf());
    let (s1, s2) = (stop.clone(), stop.clone());
    let _ = host_a;
    let rx = spawn_in(ns_b, move || {
        let store = Box::new(CoreStore::new(&rr, None));
        if udp {
            let mut c = ReceiverConfig::new(listen);
            c.loss = Some(LossConfig {
                send: LossRates::default(),
                recv: LossRates::uniform(0.05),
                seed: 3,
            });
            UdpReceiver::new(store, c)?.run(&s1)
        } else {
            let mut c = TcpReceiverConfig::new(listen);
            c.backend = tcp_backend;
            TcpReceiver::new(store, c)?.run(&s1)
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let tx = spawn_in(ns_a, move || {
        let src = Box::new(CoreSource::open(&pr, "feed")?);
        if udp {
            let mut c = SenderConfig::new(listen);
            c.loss = Some(LossConfig {
                send: LossRates::uniform(0.05),
                recv: LossRates::default(),
                seed: 4,
            });
            c.session_timeout = Duration::from_millis(500);
            UdpSender::new(src, c)?.run(&s2)
        } else {
            let mut c = TcpSenderConfig::new(listen);
            c.backend = tcp_backend;
            c.session_timeout = Duration::from_millis(500);
            c.backoff.max = Duration::from_millis(500);
            TcpSender::new(src, c).run(&s2)
        }
    });
    let mut w = p.writer().unwrap();
    let n = 100_000;
    for i in 0..n {
        w.append(&payload(i)).unwrap();
        if i == n / 2 {
            if let Some(net) = &net {
                wait_replica(
                    rroot.path(),
                    "feed",
                    p.tail().0 / 2,
                    Duration::from_secs(60),
                );
                net.link(false);
                std::thread::sleep(Duration::from_secs(2));
                net.link(true);
            }
        }
    }
    let end = p.tail().0;
    wait_replica(rroot.path(), "feed", end, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap().unwrap();
    rx.join().unwrap().unwrap();
    assert_identical(&proot.path().join("feed"), &rroot.path().join("feed"), end);
    check_replica_messages(rroot.path(), "feed", n);
    drop(net);
}

#[test]
fn udp_across_namespaces_with_loss_and_link_cut() {
    scenario(true, 1, Backend::Auto);
}

#[test]
fn tcp_across_namespaces_with_link_cut() {
    // io_uring where the kernel allows it (Auto falls back with a warning otherwise).
    scenario(false, 2, Backend::Auto);
}

#[test]
fn tcp_plain_sockets_across_namespaces_with_link_cut() {
    scenario(false, 3, Backend::Plain);
}
