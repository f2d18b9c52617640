//! Runs the `ringway-bench` binary the way CI and users do: every scenario with `--quick`, the JSON summary parsed
//! and its shape checked, the output files present, and `compare` on crafted summaries. No timing assertions:
//! the figures of a `--quick` run on a shared machine mean nothing; only the harness's behaviour is checked.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringway-bench");

/// Runs the binary with a watchdog (a hang fails the test instead of stalling CI).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringway-bench");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringway-bench {args:?} did not finish within the watchdog");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "ringway-bench {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn summary(dir: &Path, scenario: &str) -> Value {
    let text =
        std::fs::read_to_string(dir.join(format!("{scenario}.json"))).expect("summary written");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Checks the shape promised in the issue: scenario, payload, machine, systems with every percentile key.
fn check_shape(v: &Value, scenario: &str) {
    assert_eq!(v["scenario"], scenario);
    assert!(v["payload_bytes"].is_u64());
    assert!(v["iterations"].is_u64());
    let m = &v["machine"];
    for k in ["cpu_model", "kernel"] {
        assert!(m[k].is_string(), "machine.{k}: {m}");
    }
    assert!(m["cores"].as_u64().unwrap() >= 1);
    assert!(m["pinning_obtained"].is_boolean());
    assert!(m["pinning"].is_array());
    assert!(m["timer_overhead"]["p50_ns"].is_u64());
    let systems = v["systems"].as_array().expect("systems array");
    assert!(!systems.is_empty());
    for s in systems {
        let name = s["name"].as_str().expect("name");
        let status = s["status"].as_str().expect("status");
        assert!(
            status == "ok" || status.starts_with("skipped: "),
            "{name}: {status}"
        );
        for k in [
            "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns", "mean_ns", "samples",
        ] {
            assert!(s.get(k).is_some(), "{name} lacks {k}");
        }
        if status == "ok" && s.get("msgs_per_sec").is_none() {
            let p50 = s["p50_ns"].as_u64().unwrap();
            let p99 = s["p99_ns"].as_u64().unwrap();
            let max = s["max_ns"].as_u64().unwrap();
            assert!(
                p50 <= p99 && p99 <= max,
                "{name}: percentiles not monotonic"
            );
            assert!(s["samples"].as_u64().unwrap() > 0);
        }
    }
}

fn names(v: &Value) -> Vec<String> {
    v["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn status<'a>(v: &'a Value, name: &str) -> &'a str {
    v["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing"))["status"]
        .as_str()
        .unwrap()
}

const QUICK: &[&str] = &[
    "--quick",
    "--iterations",
    "3000",
    "--warmup",
    "300",
    "--timeout-secs",
    "60",
];

fn with_quick<'a>(mut args: Vec<&'a str>, out: &'a str) -> Vec<&'a str> {
    args.extend_from_slice(QUICK);
    args.extend_from_slice(&["--out", out]);
    args
}

#[test]
fn pingpong_processes_lists_every_peer_and_writes_all_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let o = ok(&with_quick(vec!["pingpong", "--peers", "all"], out));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("p50/limit"), "{stdout}");
    let v = summary(dir.path(), "pingpong");
    check_shape(&v, "pingpong");
    let n = names(&v);
    for expected in [
        "limit",
        "limit-2line",
        "limit-log",
        "ringway",
        "ringfire",
        "iceoryx2",
        "crossbeam",
        "uds",
        "tcp",
        "udp",
        "pipe",
        "limit-after",
    ] {
        assert!(
            n.iter().any(|x| x == expected),
            "{expected} silently dropped: {n:?}"
        );
    }
    assert_eq!(status(&v, "limit"), "ok");
    assert_eq!(status(&v, "limit-2line"), "ok");
    assert_eq!(status(&v, "ringway"), "ok");
    for s in v["systems"].as_array().unwrap() {
        if s["status"] == "ok" {
            let f = dir
                .path()
                .join(format!("pingpong-{}.hgrm", s["name"].as_str().unwrap()));
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|_| panic!("{} missing", f.display()));
            assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
            assert!(text.contains("#[Max     ="));
        }
    }
    for f in ["pingpong-latency.png", "pingpong-latency.svg"] {
        let len = std::fs::metadata(dir.path().join(f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{f} missing or empty");
    }
    let svg = std::fs::read_to_string(dir.path().join("pingpong-latency.svg")).unwrap();
    assert!(svg.contains("ringway") && svg.contains("limit"));
}

#[test]
fn pingpong_threads_with_a_payload_ringfire_cannot_carry_reports_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&with_quick(
        vec![
            "pingpong",
            "--threads",
            "--payload",
            "100",
            "--peers",
            "ringfire,crossbeam,pipe",
        ],
        out,
    ));
    let v = summary(dir.path(), "pingpong");
    check_shape(&v, "pingpong");
    assert_eq!(v["payload_bytes"], 100);
    assert!(
        status(&v, "ringfire").starts_with("skipped: "),
        "{}",
        status(&v, "ringfire")
    );
    assert_eq!(status(&v, "crossbeam"), "ok");
    assert_eq!(status(&v, "pipe"), "ok");
    assert_eq!(status(&v, "ringway"), "ok");
}

/// Every peer of `--peers all`: each one-directional scenario lists them all, measured or skipped with a reason.
const ALL_PEERS: &[&str] = &[
    "ringfire",
    "iceoryx2",
    "crossbeam",
    "uds",
    "tcp",
    "udp",
    "pipe",
];

/// iceoryx2 is an optional feature: without it the row must say so; with it, it must have run.
fn check_iceoryx2(v: &Value, row: &str) {
    let st = status(v, row);
    if st.starts_with("skipped: ") {
        assert!(st.contains("`iceoryx2` feature"), "{row}: {st}");
    } else {
        assert_eq!(st, "ok", "{row}");
    }
}

#[test]
fn roll_wake_and_typed_run_quick() {
    for (scenario, extra) in [
        ("roll", vec!["--segment-size", "65536"]),
        ("wake", vec![]),
        ("typed", vec![]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let mut args = vec![scenario];
        args.extend(extra);
        ok(&with_quick(args, out));
        let v = summary(dir.path(), scenario);
        check_shape(&v, scenario);
        assert!(
            v["systems"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"] == "ok"),
            "{scenario}: {v}"
        );
    }
}

#[test]
fn oneway_measures_every_peer_with_the_same_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&with_quick(
        vec!["oneway", "--rate", "200000", "--peers", "all"],
        out,
    ));
    let v = summary(dir.path(), "oneway");
    check_shape(&v, "oneway");
    assert_eq!(
        names(&v),
        ["ringway"]
            .iter()
            .chain(ALL_PEERS)
            .copied()
            .collect::<Vec<_>>()
    );
    for name in [
        "ringway",
        "ringfire",
        "crossbeam",
        "uds",
        "tcp",
        "udp",
        "pipe",
    ] {
        assert_eq!(status(&v, name), "ok", "{name}: {v}");
        let row = v["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        let note = row["note"].as_str().unwrap_or("");
        assert!(
            note.starts_with("against the actual send time"),
            "{name}: {note}"
        );
        assert!(dir.path().join(format!("oneway-{name}.hgrm")).exists());
    }
    check_iceoryx2(&v, "iceoryx2");
    // The lossless systems deliver every recorded message: warm-up excluded, nothing lost.
    for name in ["ringway", "ringfire", "crossbeam", "uds", "tcp", "pipe"] {
        let row = v["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        assert_eq!(row["samples"], 3000, "{name}");
    }
}

#[test]
fn fanout_runs_the_broadcast_peers_and_says_why_the_others_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&with_quick(
        vec![
            "fanout",
            "--subscribers",
            "2",
            "--rate",
            "100000",
            "--peers",
            "all",
        ],
        out,
    ));
    let v = summary(dir.path(), "fanout");
    check_shape(&v, "fanout");
    for name in ["ringway", "ringfire"] {
        for suffix in ["slowest", "median"] {
            assert_eq!(status(&v, &format!("{name}-{suffix}")), "ok", "{v}");
        }
    }
    if names(&v).iter().any(|n| n == "iceoryx2") {
        check_iceoryx2(&v, "iceoryx2");
    } else {
        check_iceoryx2(&v, "iceoryx2-slowest");
        check_iceoryx2(&v, "iceoryx2-median");
    }
    for name in ["crossbeam", "uds", "tcp", "pipe"] {
        let st = status(&v, name);
        assert!(st.starts_with("skipped: 2 readers: "), "{name}: {st}");
    }
    assert!(status(&v, "udp").contains("loses messages"), "{v}");
    assert!(status(&v, "crossbeam").contains("no broadcast"));
}

#[test]
fn throughput_rows_carry_rates_for_every_peer_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&[
        "throughput",
        "--quick",
        "--iterations",
        "20000",
        "--warmup",
        "300",
        "--sizes",
        "8,32,4096",
        "--peers",
        "all",
        "--out",
        out,
    ]);
    let v = summary(dir.path(), "throughput");
    check_shape(&v, "throughput");
    let rows: Vec<&Value> = v["systems"].as_array().unwrap().iter().collect();
    for name in ["ringway", "ringfire", "crossbeam", "uds", "tcp", "pipe"] {
        let mine: Vec<&&Value> = rows.iter().filter(|r| r["name"] == name).collect();
        let sizes: Vec<u64> = mine
            .iter()
            .map(|r| r["payload_bytes"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [8, 32, 4096], "{name}");
        for r in mine {
            assert_eq!(r["status"], "ok", "{r}");
            assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0);
            assert_eq!(r["samples"], 20000, "{r}");
        }
    }
    // No back-pressure: one row for all sizes, with the reason.
    assert!(status(&v, "udp").contains("no back-pressure"), "{v}");
    if names(&v).iter().filter(|n| *n == "iceoryx2").count() == 1 {
        check_iceoryx2(&v, "iceoryx2");
    }
    assert!(dir.path().join("throughput-throughput.png").exists());
    let svg = std::fs::read_to_string(dir.path().join("throughput-throughput.svg")).unwrap();
    for name in ["ringway", "ringfire", "crossbeam", "uds", "tcp", "pipe"] {
        assert!(svg.contains(name), "{name} missing from the plot");
    }
}

#[test]
fn throughput_with_several_writers_runs_the_multi_writer_systems() {
    let dir = tempfile::tempdir().unwrap();
    ok(&[
        "throughput",
        "--quick",
        "--iterations",
        "20000",
        "--warmup",
        "300",
        "--sizes",
        "32",
        "--writers",
        "2",
        "--peers",
        "crossbeam,ringfire,tcp",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let v = summary(dir.path(), "throughput");
    assert_eq!(status(&v, "ringway"), "ok");
    assert_eq!(status(&v, "crossbeam"), "ok");
    assert!(status(&v, "ringfire").starts_with("skipped: 2 writers: "));
    assert!(status(&v, "tcp").starts_with("skipped: 2 writers: "));
}

#[test]
fn mqtt_quick_reports_gateway_mosquitto_and_device_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    ok(&["mqtt", "--quick", "--timeout-secs", "60", "--out", out]);
    let v = summary(dir.path(), "mqtt");
    check_shape(&v, "mqtt");
    assert_eq!(
        names(&v),
        [
            "ringway-gateway",
            "ringway-gateway-publish-to-journal",
            "ringway-gateway-publish-to-journal-spin",
            "mosquitto",
            "mosquitto-publish-to-subscriber",
            "ringway-device-readings",
            "ringway-device-to-journal",
            "ringway-device-to-subscriber"
        ]
    );
    // The device path needs root, `ip` and /dev/net/tun (a namespace with TAP devices); where
    // they exist it must have run.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let can_simulate = unsafe { libc::geteuid() } == 0
        && Path::new("/dev/net/tun").exists()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    for name in [
        "ringway-device-readings",
        "ringway-device-to-journal",
        "ringway-device-to-subscriber",
    ] {
        let st = status(&v, name);
        if can_simulate {
            assert_eq!(st, "ok", "{v}");
        } else {
            assert!(st.starts_with("skipped: "), "{name}: {st}");
        }
    }
    // The gateway runs in-process: its rows must be measured. mosquitto may be absent (skipped).
    assert_eq!(status(&v, "ringway-gateway"), "ok", "{v}");
    for name in [
        "ringway-gateway-publish-to-journal",
        "ringway-gateway-publish-to-journal-spin",
    ] {
        assert_eq!(status(&v, name), "ok", "{v}");
    }
    for s in v["systems"].as_array().unwrap() {
        if s["status"] == "ok" && s["msgs_per_sec"].is_f64() {
            assert!(s["msgs_per_sec"].as_f64().unwrap() > 0.0, "{s}");
            // The device path carries one archived Telemetry (104 bytes), the others 64 bytes.
            let expected = if s["name"] == "ringway-device-readings" {
                104
            } else {
                64
            };
            assert_eq!(s["payload_bytes"], expected);
        }
    }
    let notes: Vec<&str> = v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("ringway-gateway: RSS per idle MQTT connection")),
        "{notes:?}"
    );
}

#[test]
fn replicate_quick_reports_latency_rate_and_catchup_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut args = with_quick(
        vec!["replicate", "--messages", "5000", "--rounds", "2"],
        out,
    );
    args.extend_from_slice(&["--payload", "64"]);
    ok(&args);
    let v = summary(dir.path(), "replicate");
    check_shape(&v, "replicate");
    let rows = [
        "udp-oneway",
        "replicate-oneway",
        "replicate-tcp-oneway",
        "replicate-tcp-plain-oneway",
        "replicate-throughput",
        "replicate-throughput-5pct-loss",
        "replicate-catchup",
        "replicate-multicast-throughput",
        "replicate-tcp-throughput",
        "replicate-tcp-plain-throughput",
    ];
    assert_eq!(names(&v), rows);
    for name in rows {
        assert_eq!(status(&v, name), "ok", "{v}");
    }
    for s in v["systems"].as_array().unwrap() {
        if s["msgs_per_sec"].is_f64() {
            assert!(s["msgs_per_sec"].as_f64().unwrap() > 0.0, "{s}");
            assert_eq!(s["payload_bytes"], 64);
            assert_eq!(s["samples"], 5000);
        } else {
            assert_eq!(s["samples"], 3000, "{s}");
        }
    }
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("replication p50 / plain UDP one-way p50"),
        "{notes}"
    );
    for f in [
        "replicate-udp-oneway.hgrm",
        "replicate-replicate-oneway.hgrm",
    ] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn compare_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        dir.path(),
        "old.json",
        r#"{"scenario":"pingpong","payload_bytes":32,"systems":[
            {"name":"limit","status":"ok","p50_ns":120,"p99_ns":250},
            {"name":"ringway","status":"ok","p50_ns":150,"p99_ns":300},
            {"name":"iceoryx2","status":"skipped: not built"}]}"#,
    );
    let same = write(
        dir.path(),
        "same.json",
        r#"{"scenario":"pingpong","payload_bytes":32,"systems":[
            {"name":"limit","status":"ok","p50_ns":121,"p99_ns":240},
            {"name":"ringway","status":"ok","p50_ns":155,"p99_ns":310}]}"#,
    );
    let worse = write(
        dir.path(),
        "worse.json",
        r#"{"scenario":"pingpong","payload_bytes":32,"systems":[
            {"name":"limit","status":"ok","p50_ns":120,"p99_ns":250},
            {"name":"ringway","status":"ok","p50_ns":150,"p99_ns":600}]}"#,
    );
    let other = write(
        dir.path(),
        "other.json",
        r#"{"scenario":"throughput","systems":[]}"#,
    );
    let broken = write(
        dir.path(),
        "broken.json",
        r#"{"scenario":"pingpong","systems":[{"status":"ok"}]}"#,
    );

    let o = run(&["compare", &base, &same]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(&["compare", &base, &worse]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("REGRESSION"));
    // A looser threshold accepts the same change.
    let o = run(&["compare", &base, &worse, "--threshold", "150"]);
    assert_eq!(o.status.code(), Some(0));
    for (a, b) in [(&base, &other), (&base, &broken)] {
        let o = run(&["compare", a, b]);
        assert_eq!(o.status.code(), Some(2));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    let o = run(&["compare", &base, "/nonexistent/x.json"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bad_input_is_a_clear_error() {
    for args in [
        vec!["pingpong", "--quick", "--peers", "zeromq"],
        vec!["pingpong", "--quick", "--iterations", "0"],
        vec!["oneway", "--quick", "--payload", "8"],
        vec!["fanout", "--quick", "--payload", "16"],
        vec!["oneway", "--quick", "--peers", "zeromq"],
        vec!["throughput", "--quick", "--writers", "0"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("ringway-bench: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
}
