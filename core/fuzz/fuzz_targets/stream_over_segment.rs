//! A stream directory whose first segment file holds fuzzed bytes: `Stream::verify`, readers
//! from every kind of start, and a new writer's tail recovery must return errors, never panic
//! or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_core::{Position, Start, Stream, StreamConfig};
use std::sync::OnceLock;

const SEGMENT: usize = 64 << 10;

fn root() -> &'static std::path::Path {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ringway-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn drain(stream: &Stream, start: Start) {
    let Ok(mut r) = stream.reader(start) else {
        return;
    };
    for _ in 0..4096 {
        match r.poll(64, |f| {
            let _ = (f.payload(), f.meta(), f.raw(), f.timestamp_ns());
        }) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let Ok(mut r) = stream.reader(start) else {
        return;
    };
    for _ in 0..4096 {
        match r.next_raw() {
            Ok(Some(f)) => {
                let _ = (f.payload(), f.raw());
            }
            _ => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let body = &data[1..];
    let root = root();
    let name = "s";
    let _ = std::fs::remove_dir_all(root.join(name));
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT as u64)
        .crc(flags & 1 != 0)
        .multi_writer(flags & 2 != 0);
    let stream = Stream::create(root, name, &cfg).unwrap();
    // The fuzzed bytes, repeated to fill the segment (or, with flag 4, a truncated file).
    let mut seg = vec![0u8; SEGMENT];
    for (i, b) in seg.iter_mut().enumerate() {
        *b = body[i % body.len()];
    }
    if flags & 8 != 0 {
        // Only the start of the segment is fuzzed; the rest is unwritten.
        seg[body.len().min(SEGMENT)..].fill(0);
    }
    if flags & 4 != 0 {
        seg.truncate(body.len().min(SEGMENT));
    }
    std::fs::write(stream.dir().join(format!("{:020}.seg", 0)), &seg).unwrap();
    let _ = stream.verify();
    drain(&stream, Start::Beginning);
    drain(&stream, Start::End);
    drain(&stream, Start::Time(u64::from(flags) << 56));
    for p in [8u64, 64, 4096, (body.len() as u64) & !7] {
        drain(&stream, Start::Position(Position(p)));
    }
    if let Ok(mut w) = stream.writer() {
        let _ = w.append(b"after");
        drop(w);
        let _ = stream.verify();
        drain(&stream, Start::Beginning);
    }
});
