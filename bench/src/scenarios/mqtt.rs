//! `mqtt`: the Ringway MQTT gateway (in-process, loopback, ephemeral port, journal under the scratch directory)
//! next to Debian's `mosquitto` (a child process on a loopback port), in the same run:
//!
//! 1. QoS 1 publish throughput: `--clients` concurrent MQTT 3.1.1 clients publish 64-byte payloads back to back,
//!    up to `INFLIGHT` unacknowledged each, from one load thread of their own ([`mqtt_load`], the same for both
//!    servers); msgs/s = PUBACKs received / time from the start signal to the last PUBACK. The server's CPU time
//!    per message and the load thread's busy share are reported as notes.
//! 2. Latency, one message at a time: a QoS 1 PUBLISH carrying a timestamp, to the gateway's journal read by a
//!    ringway-core `Reader` on stream `mqtt` (a thread blocking in `Reader::wait`, and again busy-polling: row
//!    `…-spin`), and to an MQTT subscriber of mosquitto. The publisher sleeps until the receiver reports each
//!    message (a channel), so only the reader of the `-spin` row spends a core waiting.
//! 3. Memory per idle connection: 1,000 (50 with `--quick`) MQTT 3.1.1 connections (CONNECT, CONNACK, then
//!    nothing) to a freshly started server process (the gateway as this binary's hidden `__gateway` command,
//!    mosquitto started again), so no memory freed by the earlier phases is reused; (VmRSS after - VmRSS
//!    before) / connections. Reported as notes.
//! 4. The device path (`mqtt_device`): one simulated firmware device's readings/s into the journal, and its
//!    latency to a journal reader and to an MQTT subscriber.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringway_core::{Start, Stream};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::cli::MqttArgs;
use crate::error::{BenchError, Result};
use crate::report::{Report, SystemResult, SystemRun};
use crate::scenarios::mqtt_device::{self, DevicePlan, READING_BYTES};
use crate::scenarios::mqtt_load::{self, LoadPlan};
use crate::scenarios::Env;
use crate::stats::{new_histogram, record};
use crate::timer::Timer;

/// Payload bytes of every message.
const PAYLOAD: usize = 64;
/// Unacknowledged QoS 1 publishes per client (mosquitto's default `max_inflight_messages` is 20).
const INFLIGHT: u16 = 16;
/// First bytes of a latency message's payload (the throughput messages are all `x`).
const MAGIC: &[u8; 8] = b"RWLATNCY";
/// The mosquitto binary.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn sys(system: &'static str) -> impl Fn(String) -> BenchError {
    move |e| BenchError::system(system, e)
}

/// What the run uses, after `--quick`.
struct Plan {
    clients: usize,
    messages: u64,
    latency: u64,
    warmup: u64,
    idle: usize,
    timeout: Duration,
    timer: Timer,
}

/// The throughput measurement of one server.
struct Throughput {
    /// PUBACKs per second.
    rate: f64,
    /// PUBACKs counted.
    acked: u64,
    /// Server CPU time (user + system) per message, µs.
    server_cpu_us: f64,
    /// Generator CPU time / elapsed time (1.0 = the generator thread was busy the whole time).
    generator_share: f64,
}

/// One measured server: its throughput, latency and idle-connection figures.
struct Figures {
    tp: Throughput,
    latency: Histogram<u64>,
    /// The gateway only: publish -> journal with a busy-polling reader.
    latency_spin: Option<Histogram<u64>>,
    rss_per_conn: Option<f64>,
}

/// Runs the scenario.
pub fn run(args: &MqttArgs) -> Result<Report> {
    let mut env = Env::new(&args.common)?;
    let quick = args.common.quick;
    env.iterations = args
        .common
        .iterations
        .unwrap_or(if quick { 500 } else { 20_000 });
    env.warmup = args.common.warmup.unwrap_or(if quick { 50 } else { 1_000 });
    let plan = Plan {
        clients: args.clients.unwrap_or(if quick { 10 } else { 100 }).max(1),
        messages: if quick { 1_000 } else { 500_000 },
        latency: env.iterations,
        warmup: env.warmup,
        idle: if quick { 50 } else { 1_000 },
        timeout: env.timeout,
        timer: env.timer.clone(),
    };
    raise_fd_limit();
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    let mode = format!(
        "{} clients, QoS 1, {PAYLOAD} B, inflight {INFLIGHT}",
        plan.clients
    );

    let ringway = ringway_gateway(&env, &plan).map_err(|e| e.to_string());
    let mosquitto = if Path::new(MOSQUITTO).exists() {
        mosquitto(&env, &plan).map_err(|e| e.to_string())
    } else {
        Err("mosquitto not installed".to_string())
    };
    for (name, lat_name, lat_mode, figures) in [
        (
            "ringway-gateway",
            "ringway-gateway-publish-to-journal",
            "QoS 1 PUBLISH -> journal Reader (stream `mqtt`, blocking in Reader::wait), one at a time",
            ringway,
        ),
        (
            "mosquitto",
            "mosquitto-publish-to-subscriber",
            "QoS 1 PUBLISH -> MQTT subscriber (QoS 1), one at a time",
            mosquitto,
        ),
    ] {
        match figures {
            Ok(f) => {
                let mut res = SystemResult::skipped(name, "");
                res.status = "ok".into();
                res.payload_bytes = Some(PAYLOAD);
                res.msgs_per_sec = Some(f.tp.rate);
                res.bytes_per_sec = Some(f.tp.rate * PAYLOAD as f64);
                res.samples = Some(f.tp.acked);
                res.mode = Some(mode.clone());
                runs.push(SystemRun::row(res));
                let mut r = SystemRun::measured(lat_name, f.latency);
                r.result.mode = Some(lat_mode.to_string());
                runs.push(r);
                if let Some(h) = f.latency_spin {
                    let mut r = SystemRun::measured(&format!("{lat_name}-spin"), h);
                    r.result.mode = Some(
                        "QoS 1 PUBLISH -> journal Reader (stream `mqtt`, busy-polling thread), one at a time".into(),
                    );
                    runs.push(r);
                }
                notes.push(format!(
                    "{name}: server CPU {:.2} us per QoS 1 message; load generator thread busy {:.0} % of the run",
                    f.tp.server_cpu_us,
                    f.tp.generator_share * 100.0
                ));
                match f.rss_per_conn {
                    Some(b) => notes.push(format!(
                        "{name}: RSS per idle MQTT connection: {:.1} KiB ({} connections, (VmRSS after - before) / {})",
                        b / 1024.0,
                        plan.idle,
                        plan.idle
                    )),
                    None => notes.push(format!("{name}: RSS per idle connection not measured")),
                }
            }
            Err(reason) => {
                let mut res = SystemResult::skipped(name, &reason);
                res.payload_bytes = Some(PAYLOAD);
                runs.push(SystemRun::row(res));
                runs.push(SystemRun::skipped(lat_name, &reason));
                if name == "ringway-gateway" {
                    runs.push(SystemRun::skipped(&format!("{lat_name}-spin"), &reason));
                }
            }
        }
    }
    device_rows(&env, &plan, quick, &mut runs, &mut notes)?;
    notes.push(
        "ringway-gateway appends every PUBLISH to its journal (/dev/shm) before the PUBACK; mosquitto runs with its \
         defaults (no persistence)"
            .into(),
    );
    notes.push(format!(
        "clients and server share this machine's {} cores; the throughput clients run on one load thread of \
         their own for both servers (raw MQTT 3.1.1, pre-encoded publishes); the latency clients are rumqttc",
        env.cores_allowed
    ));
    let mut report = env.report("mqtt", PAYLOAD, runs);
    report.notes.extend(notes);
    Ok(report)
}

/// The device path (`mqtt_device`): rows `ringway-device-readings` (readings/s of one simulated device into the
/// journal), `ringway-device-to-journal` and `ringway-device-to-subscriber` (latency), or the reason they were skipped.
fn device_rows(
    env: &Env,
    plan: &Plan,
    quick: bool,
    runs: &mut Vec<SystemRun>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let dir = env.subdir("mqtt-device")?;
    let device_plan = DevicePlan {
        readings: if quick { 2_000 } else { 20_000 },
        samples: plan.latency,
        warmup: plan.warmup,
        timeout: plan.timeout,
    };
    let names = [
        "ringway-device-readings",
        "ringway-device-to-journal",
        "ringway-device-to-subscriber",
    ];
    match mqtt_device::measure(&dir, &device_plan) {
        Ok(f) => {
            let mut res = SystemResult::skipped(names[0], "");
            res.status = "ok".into();
            res.payload_bytes = Some(READING_BYTES);
            res.msgs_per_sec = Some(f.rate);
            res.bytes_per_sec = Some(f.rate * READING_BYTES as f64);
            res.samples = Some(f.counted);
            res.mode = Some(format!(
                "one simulated device (ringway-firmware on embassy-net, TAP), QoS 1, window {}, \
                 readings/s from the first PUBACK to the last",
                ringway_firmware::sim::WINDOW
            ));
            runs.push(SystemRun::row(res));
            for (name, hist, mode) in [
                (
                    names[1],
                    f.to_journal,
                    "device Outbox::submit -> host journal Reader (&ArchivedTelemetry in place), one at a time",
                ),
                (
                    names[2],
                    f.to_subscriber,
                    "device Outbox::submit -> MQTT subscriber of the gateway (QoS 1), one at a time",
                ),
            ] {
                let mut r = SystemRun::measured(name, hist);
                r.result.mode = Some(mode.to_string());
                r.result.payload_bytes = Some(READING_BYTES);
                runs.push(r);
            }
            notes.push(format!(
                "ringway-device-*: the firmware's session and outbox on embassy's std executor with an embassy-net \
                 stack on a TAP device in a network namespace (192.0.2.0/24), the gateway in this process inside it; \
                 payload = one archived Telemetry ({READING_BYTES} B)"
            ));
        }
        Err(reason) => {
            for name in names {
                let mut r = SystemRun::skipped(name, &reason);
                r.result.payload_bytes = Some(READING_BYTES);
                runs.push(r);
            }
        }
    }
    Ok(())
}

/// Lets 1,000 idle connections (both ends in this process for the gateway) fit under the descriptor limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("starting a tokio runtime", e))
}

/// The gateway in this process, its journal in the scratch directory.
fn ringway_gateway(env: &Env, plan: &Plan) -> Result<Figures> {
    let e = sys("ringway-gateway");
    let dir = env.subdir("mqtt-gateway")?;
    let rt = runtime()?;
    let mut config = ringway_mqtt_gateway::Config::default();
    config.mqtt.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.storage.dir = Some(dir.clone());
    config.metrics.listen = None;
    let gateway = rt
        .block_on(ringway_mqtt_gateway::Gateway::start(config))
        .map_err(|x| e(x.to_string()))?;
    let addr = gateway.mqtt_addrs()[0];
    let result = (|| {
        let tp = throughput(addr, plan, || Ok(mqtt_load::process_cpu()), true)?;
        let latency = rt.block_on(journal_latency(addr, &dir, plan, ReaderWait::Block))?;
        let latency_spin = rt.block_on(journal_latency(addr, &dir, plan, ReaderWait::Spin))?;
        let rss = gateway_child_rss(env, plan)?;
        Ok(Figures {
            tp,
            latency,
            latency_spin: Some(latency_spin),
            rss_per_conn: rss,
        })
    })()
    .map_err(|x: String| e(x));
    let _ = rt.block_on(gateway.shutdown());
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}

/// mosquitto as a child process listening on a free loopback port.
fn mosquitto(env: &Env, plan: &Plan) -> Result<Figures> {
    let e = sys("mosquitto");
    let (mut child, addr) = start_mosquitto(env, "mosquitto", plan).map_err(&e)?;
    let pid = child.0.id();
    let result = (|| {
        let tp = throughput(addr, plan, || cpu_of(pid), false)?;
        let rt = runtime().map_err(|x| x.to_string())?;
        let latency = rt.block_on(subscriber_latency(addr, plan))?;
        rt.shutdown_timeout(Duration::from_millis(200));
        // Measured on a fresh mosquitto, as the gateway's is.
        let (mut fresh, fresh_addr) = start_mosquitto(env, "mosquitto-rss", plan)?;
        let fresh_pid = fresh.0.id();
        let rss = idle_rss(fresh_addr, plan, || rss_of(&fresh_pid.to_string()));
        let _ = fresh.0.kill();
        Ok(Figures {
            tp,
            latency,
            latency_spin: None,
            rss_per_conn: rss?,
        })
    })()
    .map_err(|x: String| e(x));
    let _ = child.0.kill();
    result
}

/// Starts mosquitto on a free loopback port with its configuration under the scratch subdirectory `name`,
/// and waits until it accepts connections.
fn start_mosquitto(
    env: &Env,
    name: &str,
    plan: &Plan,
) -> std::result::Result<(Killed, SocketAddr), String> {
    let port = free_port()?;
    let dir = env.subdir(name).map_err(|x| x.to_string())?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"),
    )
    .map_err(|x| format!("writing {}: {x}", conf.display()))?;
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|x| format!("starting {MOSQUITTO}: {x}"))?;
    let mut child = Killed(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, plan.timeout, &mut child.0)?;
    Ok((child, addr))
}

/// The hidden `__gateway` command: a gateway with its defaults on a loopback port, journal in `args.dir`;
/// prints `READY ADDR`, runs until standard input closes.
pub fn gateway_process(args: &crate::cli::GatewayArgs) -> Result<()> {
    let rt = runtime()?;
    let mut config = ringway_mqtt_gateway::Config::default();
    config.mqtt.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    config.storage.dir = Some(args.dir.clone());
    config.metrics.listen = None;
    let gateway = rt
        .block_on(ringway_mqtt_gateway::Gateway::start(config))
        .map_err(|x| BenchError::system("ringway-gateway", x.to_string()))?;
    println!("READY {}", gateway.mqtt_addrs()[0]);
    std::io::stdout()
        .flush()
        .map_err(|x| BenchError::io("writing READY", x))?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let _ = rt.block_on(gateway.shutdown());
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// RSS per idle connection of a gateway in a fresh process of its own.
fn gateway_child_rss(env: &Env, plan: &Plan) -> std::result::Result<Option<f64>, String> {
    let dir = env.subdir("mqtt-gateway-rss").map_err(|x| x.to_string())?;
    let exe = std::env::current_exe().map_err(|x| format!("finding this binary: {x}"))?;
    let child = Command::new(exe)
        .arg("__gateway")
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|x| format!("starting the gateway process: {x}"))?;
    let mut child = Killed(child);
    let out = child
        .0
        .stdout
        .take()
        .ok_or("no stdout of the gateway process")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .map_err(|x| format!("reading the gateway process: {x}"))?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("the gateway process said {line:?}, not READY ADDR"))?;
    let pid = child.0.id();
    idle_rss(addr, plan, || rss_of(&pid.to_string()))
}

/// A child process killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::result::Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn wait_listening(
    addr: SocketAddr,
    timeout: Duration,
    child: &mut Child,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited before listening: {st}"));
        }
        if Instant::now() > deadline {
            return Err(format!("not listening on {addr} after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connected client: its handle and event loop, after CONNACK.
async fn connect(
    addr: SocketAddr,
    id: String,
    timeout: Duration,
) -> std::result::Result<(AsyncClient, rumqttc::EventLoop), String> {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_inflight(INFLIGHT);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(1 << 16, 1 << 16);
    let (client, mut el) = AsyncClient::new(o, usize::from(INFLIGHT) * 2);
    let connack = async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("connecting to {addr}: {e}")),
            }
        }
    };
    tokio::time::timeout(timeout, connack)
        .await
        .map_err(|_| format!("no CONNACK from {addr} within {timeout:?}"))??;
    Ok((client, el))
}

/// `plan.messages` QoS 1 publishes spread over `plan.clients` raw clients ([`mqtt_load`]); `server_cpu` reads the
/// server's CPU time (the generator's own share is subtracted when the server is this process).
fn throughput(
    addr: SocketAddr,
    plan: &Plan,
    server_cpu: impl Fn() -> std::result::Result<Duration, String>,
    in_process: bool,
) -> std::result::Result<Throughput, String> {
    let load = LoadPlan {
        clients: plan.clients,
        messages: plan.messages,
        window: INFLIGHT,
        payload: PAYLOAD,
        timeout: plan.timeout,
    };
    let mut cpu0 = Ok(Duration::ZERO);
    let r = mqtt_load::run(addr, &load, || cpu0 = server_cpu())?;
    let mut cpu = server_cpu()?.saturating_sub(cpu0?);
    if in_process {
        cpu = cpu.saturating_sub(r.generator_cpu);
    }
    Ok(Throughput {
        rate: r.rate(),
        acked: r.acked,
        server_cpu_us: cpu.as_secs_f64() * 1e6 / r.acked.max(1) as f64,
        generator_share: r.generator_cpu.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9),
    })
}

/// CPU time (user + system) of process `pid`, from `/proc/PID/stat`.
fn cpu_of(pid: u32) -> std::result::Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: no command name"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> std::result::Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{path}: field {} unreadable", i + 3))
    };
    // `rest` starts at field 3 (state), so field 14 is index 11.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// A latency payload: magic, send timestamp, padding.
fn stamped(timer: &Timer) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(MAGIC);
    p[8..16].copy_from_slice(&timer.raw().to_le_bytes());
    p
}

fn stamp_of(payload: &[u8]) -> Option<u64> {
    if payload.len() >= 16 && &payload[..8] == MAGIC {
        Some(u64::from_le_bytes(payload[8..16].try_into().ok()?))
    } else {
        None
    }
}

/// Publishes `warmup + latency` stamped messages one at a time, each once the receiver reported the previous one
/// on `seen` (a channel: the publisher sleeps meanwhile instead of taking a core from the path it measures).
async fn paced_publish(
    client: &AsyncClient,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<u64>,
    plan: &Plan,
) -> std::result::Result<(), String> {
    let total = plan.warmup + plan.latency;
    for i in 0..total {
        client
            .publish(
                "bench/latency",
                QoS::AtLeastOnce,
                false,
                stamped(&plan.timer),
            )
            .await
            .map_err(|e| format!("publish: {e}"))?;
        loop {
            match tokio::time::timeout(plan.timeout, seen.recv()).await {
                Ok(Some(n)) if n > i => break,
                Ok(Some(_)) => {}
                Ok(None) => return Err("receiver stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "message {i} not received within {:?}",
                        plan.timeout
                    ))
                }
            }
        }
    }
    Ok(())
}

/// How the journal reader of the publish -> journal measurement waits for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderWait {
    /// `Reader::wait`: blocks in the kernel (futex) until the writer commits, like a subscriber blocked in epoll.
    Block,
    /// Busy-polls `Reader::poll` (one core spent on the reader).
    Spin,
}

/// Publish -> journal Reader on stream `mqtt` (a thread of its own, waiting as `wait` says).
async fn journal_latency(
    addr: SocketAddr,
    dir: &Path,
    plan: &Plan,
    wait: ReaderWait,
) -> std::result::Result<Histogram<u64>, String> {
    let id = format!("bench-latency-{wait:?}");
    let (client, mut el) = connect(addr, id, plan.timeout).await?;
    let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    // The stream exists once the gateway has appended to it (the throughput phase did).
    let stream = Stream::open(dir, "mqtt").map_err(|e| format!("opening stream `mqtt`: {e}"))?;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (rstop, timer, timeout) = (stop.clone(), plan.timer.clone(), plan.timeout);
    let (total, warmup) = (plan.warmup + plan.latency, plan.warmup);
    // Positioned before the first stamped message is published (a reader opened later could start after it).
    let mut r = stream
        .reader(Start::End)
        .map_err(|e| format!("reader: {e}"))?;
    let reader = std::thread::spawn(move || -> std::result::Result<Histogram<u64>, String> {
        let mut hist = new_histogram();
        let mut n = 0u64;
        while n < total {
            // Relaxed: the flag only ends this loop; the publisher's result comes back through join.
            if rstop.load(Ordering::Relaxed) {
                return Err("publisher stopped".into());
            }
            if wait == ReaderWait::Block {
                r.wait(timeout).map_err(|e| format!("reader wait: {e}"))?;
            }
            let mut sample = None;
            r.poll(1, |f| {
                let now = timer.raw();
                sample = stamp_of(f.payload()).map(|t0| timer.nanos_between(t0, now));
            })
            .map_err(|e| format!("reader poll: {e}"))?;
            if let Some(ns) = sample {
                if n >= warmup {
                    record(&mut hist, ns).map_err(|e| e.to_string())?;
                }
                n += 1;
                // The publisher sends the next message only after this one was handled.
                let _ = seen_tx.send(n);
            } else if wait == ReaderWait::Spin {
                std::hint::spin_loop();
            }
        }
        Ok(hist)
    });
    let published = paced_publish(&client, &mut seen, plan).await;
    // Relaxed: see the reader loop.
    stop.store(true, Ordering::Relaxed);
    let hist = reader
        .join()
        .map_err(|_| "reader thread panicked".to_string())?;
    let _ = client.disconnect().await;
    driver.abort();
    published?;
    hist
}

/// Publish -> MQTT subscriber (QoS 1) of the same broker.
async fn subscriber_latency(
    addr: SocketAddr,
    plan: &Plan,
) -> std::result::Result<Histogram<u64>, String> {
    let (sub, mut sel) = connect(addr, "bench-subscriber".into(), plan.timeout).await?;
    sub.subscribe("bench/latency", QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let subacked = async {
        loop {
            match sel.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("subscribing: {e}")),
            }
        }
    };
    tokio::time::timeout(plan.timeout, subacked)
        .await
        .map_err(|_| "no SUBACK".to_string())??;
    let (client, mut el) = connect(addr, "bench-latency".into(), plan.timeout).await?;
    let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let timer = plan.timer.clone();
    let (total, warmup) = (plan.warmup + plan.latency, plan.warmup);
    let receiver = tokio::spawn(async move {
        let mut hist = new_histogram();
        let mut n = 0u64;
        while n < total {
            match sel.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = timer.raw();
                    if let Some(t0) = stamp_of(&p.payload) {
                        if n >= warmup {
                            record(&mut hist, timer.nanos_between(t0, now))
                                .map_err(|e| e.to_string())?;
                        }
                        n += 1;
                        let _ = seen_tx.send(n);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("subscriber: {e}")),
            }
        }
        Ok::<_, String>(hist)
    });
    let published = paced_publish(&client, &mut seen, plan).await;
    if published.is_err() {
        receiver.abort();
    }
    let _ = client.disconnect().await;
    driver.abort();
    published?;
    let hist = receiver
        .await
        .map_err(|e| format!("subscriber task: {e}"))??;
    let _ = sub.disconnect().await;
    Ok(hist)
}

/// VmRSS in bytes of `/proc/WHO/status`.
fn rss_of(who: &str) -> std::result::Result<u64, String> {
    let path = PathBuf::from(format!("/proc/{who}/status"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS in {}", path.display()))
}

/// Opens `plan.idle` connections (CONNECT, CONNACK accepted) and returns (RSS after - before) / connections.
fn idle_rss(
    addr: SocketAddr,
    plan: &Plan,
    rss: impl Fn() -> std::result::Result<u64, String>,
) -> std::result::Result<Option<f64>, String> {
    // Let the server settle after the previous phase.
    std::thread::sleep(Duration::from_millis(200));
    let before = rss()?;
    let mut conns = Vec::with_capacity(plan.idle);
    for i in 0..plan.idle {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("idle connection {i}: {e}"))?;
        s.set_read_timeout(Some(plan.timeout))
            .map_err(|e| e.to_string())?;
        s.write_all(&mqtt_load::connect_packet(&format!("bench-idle-{i}"), 0))
            .map_err(|e| format!("idle connection {i}: {e}"))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack)
            .map_err(|e| format!("idle connection {i}: CONNACK: {e}"))?;
        if ack[0] != 0x20 || ack[3] != 0 {
            return Err(format!("idle connection {i}: refused: {ack:?}"));
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss()?;
    drop(conns);
    Ok(Some(
        (after as f64 - before as f64) / plan.idle.max(1) as f64,
    ))
}
