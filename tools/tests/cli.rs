//! End-to-end tests of the `ringway` binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ringway(dir: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringway"));
    cmd.args(args)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn ringway");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pub_then_tail_in_every_format() {
    let d = tempfile::tempdir().unwrap();
    let o = ringway(d.path(), &["pub", "s"], Some(b"alpha\nbeta\n\xffgamma"));
    assert!(o.status.success(), "{o:?}");
    let last: u64 = text(&o).trim().parse().unwrap();
    assert!(last > 0);

    let o = ringway(d.path(), &["tail", "s"], None);
    assert_eq!(text(&o), "alpha\nbeta\n\u{fffd}gamma\n");

    let o = ringway(
        d.path(),
        &["tail", "s", "--format", "json", "--count", "2"],
        None,
    );
    let lines: Vec<serde_json::Value> = text(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["position"], 0);
    assert_eq!(lines[0]["len"], 5);
    assert_eq!(lines[0]["payload_b64"], "YWxwaGE=");
    assert!(
        lines[1]["timestamp_ns"].as_u64().unwrap() >= lines[0]["timestamp_ns"].as_u64().unwrap()
    );

    let second = lines[1]["position"].as_u64().unwrap().to_string();
    let o = ringway(
        d.path(),
        &[
            "tail", "s", "--from", &second, "--format", "hex", "--count", "1",
        ],
        None,
    );
    assert_eq!(text(&o), format!("{second}: 62 65 74 61\n"));

    let o = ringway(d.path(), &["tail", "s", "--from", "end"], None);
    assert!(o.status.success());
    assert_eq!(text(&o), "");
}

#[test]
fn tail_from_time_skips_older_messages() {
    let d = tempfile::tempdir().unwrap();
    ringway(d.path(), &["pub", "s"], Some(b"old\n"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ringway(d.path(), &["pub", "s"], Some(b"new\n"));
    let o = ringway(d.path(), &["tail", "s", "--from", &cut], None);
    assert_eq!(text(&o), "new\n", "{o:?}");
}

#[test]
fn stat_and_verify_report_streams() {
    let d = tempfile::tempdir().unwrap();
    ringway(d.path(), &["pub", "a"], Some(b"1\n2\n3\n"));
    let o = ringway(d.path(), &["stat", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["name"], "a");
    assert_eq!(s["messages"], 3);
    assert_eq!(s["first_position"], 0);
    assert!(s["last_position"].as_u64().unwrap() > 0);
    let o = ringway(d.path(), &["verify", "a"], None);
    assert!(o.status.success());
    assert!(text(&o).contains("OK: 3 frames"), "{}", text(&o));
}

#[test]
fn verify_finds_a_flipped_byte_with_crc() {
    let d = tempfile::tempdir().unwrap();
    let o = ringway(
        d.path(),
        &["create", "c", "--crc", "--segment-size", "65536"],
        None,
    );
    assert!(o.status.success(), "{o:?}");
    ringway(
        d.path(),
        &["pub", "c"],
        Some(b"first message\nsecond message\n"),
    );
    let seg = d.path().join("c").join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x01; // inside the first payload
    std::fs::write(&seg, bytes).unwrap();
    let o = ringway(d.path(), &["verify", "c"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("DAMAGED at 0: CRC mismatch"),
        "{}",
        text(&o)
    );
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["tail", "missing"][..],
        &["verify", "missing"],
        &["tail", "bad/name"],
    ] {
        let o = ringway(d.path(), args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("ringway: error: "), "{err}");
        assert!(!err.contains("panicked"));
    }
    ringway(d.path(), &["pub", "s"], Some(b"x\n"));
    let o = ringway(d.path(), &["tail", "s", "--from", "3"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = ringway(d.path(), &["tail", "s", "--from", "yesterday-ish"], None);
    assert_eq!(o.status.code(), Some(2));
    std::fs::write(d.path().join("s").join("meta"), b"garbage").unwrap();
    let o = ringway(d.path(), &["tail", "s"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("corrupt stream file"));
}

#[test]
fn single_writer_pub_refuses_a_second_live_writer() {
    let d = tempfile::tempdir().unwrap();
    ringway(d.path(), &["pub", "s"], Some(b"x\n"));
    let stream = ringway_core::Stream::open(d.path(), "s").unwrap();
    let _w = stream.writer().unwrap();
    let o = ringway(d.path(), &["pub", "s"], Some(b"y\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already has a live writer"));
}

#[test]
fn tail_follow_sees_new_messages() {
    let d = tempfile::tempdir().unwrap();
    ringway(d.path(), &["pub", "f"], Some(b"one\n"));
    let child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["tail", "f", "--follow", "--count", "3", "--dir"])
        .arg(d.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    ringway(d.path(), &["pub", "f"], Some(b"two\nthree\n"));
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o), "one\ntwo\nthree\n");
}

#[test]
fn tail_named_continues_where_the_last_run_stopped_and_cursors_are_managed() {
    let d = tempfile::tempdir().unwrap();
    ringway(d.path(), &["pub", "s"], Some(b"1\n2\n3\n4\n5\n"));
    let o = ringway(
        d.path(),
        &["tail", "s", "--named", "risk", "--count", "2"],
        None,
    );
    assert_eq!(text(&o), "1\n2\n");
    let o = ringway(
        d.path(),
        &["tail", "s", "--named", "risk", "--count", "2"],
        None,
    );
    assert_eq!(text(&o), "3\n4\n");

    let o = ringway(d.path(), &["cursor", "list", "s", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "risk");
    assert_eq!(v[0]["lag_messages"], 1);
    assert_eq!(v[0]["owner_pid"], serde_json::Value::Null);

    let o = ringway(d.path(), &["stat", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["streams"][0]["cursors"][0]["lag_messages"], 1);

    let o = ringway(
        d.path(),
        &["cursor", "reset", "s", "risk", "--to", "start"],
        None,
    );
    assert!(o.status.success());
    let o = ringway(d.path(), &["tail", "s", "--named", "risk"], None);
    assert_eq!(text(&o), "1\n2\n3\n4\n5\n");

    let o = ringway(d.path(), &["cursor", "delete", "s", "risk"], None);
    assert!(o.status.success());
    let o = ringway(d.path(), &["cursor", "delete", "s", "risk"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no cursor named 'risk'"));
}

#[test]
fn pub_with_a_topic_shows_it_in_json_tail() {
    let d = tempfile::tempdir().unwrap();
    let o = ringway(
        d.path(),
        &["pub", "mqtt", "--topic", "devices/7/cmd"],
        Some(b"reboot\n"),
    );
    assert!(o.status.success(), "{o:?}");
    let o = ringway(d.path(), &["tail", "mqtt", "--format", "json"], None);
    let v: serde_json::Value = serde_json::from_str(text(&o).trim()).unwrap();
    assert_eq!(v["mqtt_topic"], "devices/7/cmd");
    assert_eq!(v["payload_b64"], "cmVib290");
}

#[test]
fn replicate_and_up_report_bad_arguments_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let o = ringway(
        d.path(),
        &["replicate", "missing", "--to", "udp://127.0.0.1:9"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let o = ringway(
        d.path(),
        &["receive", "--listen", "carrier-pigeon://x"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "[mqtt]\nlisten = 42\n").unwrap();
    let o = ringway(d.path(), &["up", "--config", cfg.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("ringway: error: "));
}
