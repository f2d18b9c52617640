//! Typed messages: round trips through the mapping, type/schema mismatches, validation of
//! corrupt payloads, ring streams, named cursors, blocking waits and the two-process example.

#[path = "../examples/quote/mod.rs"]
mod quote;

use std::time::Duration;

use quote::{Quote, Symbol};
use ringway_core::idle::{IdleStrategy, Idler};
use ringway_core::typed::{Access, Message, Publisher, Subscriber, TypedError};
use ringway_core::{AppendOptions, CursorOptions, Start, Stream, StreamConfig};

/// A variable-size message: strings and vectors are stored out of line.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    account: String,
    legs: Vec<u32>,
    urgent: bool,
}
ringway_core::message!(Order, type_id = 0x4f52_4452, schema = 3);

/// Same type id as `Order`, other schema.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct OrderV2 {
    id: u64,
}
ringway_core::message!(OrderV2, type_id = 0x4f52_4452, schema = 4);

fn stream(dir: &std::path::Path, cfg: StreamConfig) -> Stream {
    Stream::create(dir, "t", &cfg.segment_size(1 << 20)).unwrap()
}

fn order(i: u64) -> Order {
    Order {
        id: i,
        // Lengths vary from empty to 200+ bytes, so claims grow and shrink.
        account: "acct-".repeat((i % 45) as usize),
        legs: (0..(i % 17) as u32).collect(),
        urgent: i.is_multiple_of(3),
    }
}

fn check_order(o: &ArchivedOrder, i: u64) {
    let e = order(i);
    assert_eq!(o.id.to_native(), e.id);
    assert_eq!(o.account.as_str(), e.account);
    assert_eq!(
        o.legs.iter().map(|l| l.to_native()).collect::<Vec<_>>(),
        e.legs
    );
    assert_eq!(o.urgent, e.urgent);
}

#[test]
fn quotes_round_trip_and_header_carries_type() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    let mut p = Publisher::<Quote>::new(s.writer().unwrap());
    for i in 0..1000 {
        let mut q = quote::quote(i);
        q.ts = 1_000 + i;
        p.send(&q).unwrap();
    }
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut frames = 0;
    r.poll(usize::MAX, |f| {
        assert_eq!(f.type_id(), Quote::TYPE_ID);
        assert_eq!(f.schema_version(), Quote::SCHEMA_VERSION);
        assert_eq!(
            f.payload().len(),
            std::mem::size_of::<quote::ArchivedQuote>()
        );
        frames += 1;
    })
    .unwrap();
    assert_eq!(frames, 1000);

    let mut sub = Subscriber::<Quote>::new(&s, Start::Beginning).unwrap();
    let mut n = 0u64;
    let got = sub
        .poll(usize::MAX, |q| {
            assert!(quote::matches(&q, n), "quote {n} differs: {q:?}");
            assert_eq!(q.ts.to_native(), 1_000 + n);
            assert_eq!(
                quote::symbol_str(&q.symbol),
                ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"][(n % 4) as usize]
            );
            n += 1;
        })
        .unwrap();
    assert_eq!((got, n), (1000, 1000));
    assert_eq!(sub.poll(10, |_| panic!("nothing more")).unwrap(), 0);
}

#[test]
fn variable_size_messages_grow_and_shrink_claims() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    let mut p = Publisher::<Order>::new(s.writer().unwrap());
    let mut positions = Vec::new();
    for i in 0..500 {
        positions.push(p.send(&order(i)).unwrap());
    }
    // Frames are contiguous: an overflowing first claim left nothing behind.
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut seen = Vec::new();
    r.poll(usize::MAX, |f| seen.push((f.position(), f.next_position())))
        .unwrap();
    assert_eq!(seen.len(), 500);
    for (k, w) in seen.windows(2).enumerate() {
        assert_eq!(w[0].1, w[1].0);
        assert_eq!(w[0].0, positions[k]);
    }
    // SAFETY: every Order frame of this stream comes from the Order publisher above; append-only.
    let trusted = unsafe { Access::unchecked() };
    for access in [Access::Validated, trusted] {
        let mut sub = Subscriber::<Order>::with_access(&s, Start::Beginning, access).unwrap();
        let mut i = 0;
        sub.poll(usize::MAX, |o| {
            check_order(&o, i);
            i += 1;
        })
        .unwrap();
        assert_eq!(i, 500);
    }
}

#[test]
fn message_larger_than_the_stream_allows_is_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default().max_message_size(256));
    let mut p = Publisher::<Order>::new(s.writer().unwrap());
    let mut big = order(1);
    big.account = "x".repeat(1000);
    match p.send(&big) {
        Err(TypedError::Journal(ringway_core::Error::MessageTooLarge { len, max })) => {
            assert!(len > 1000);
            assert_eq!(max, 256);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // Nothing was published and the publisher still works.
    p.send(&order(2)).unwrap();
    let mut sub = Subscriber::<Order>::new(&s, Start::Beginning).unwrap();
    let mut ids = Vec::new();
    sub.poll(10, |o| ids.push(o.id.to_native())).unwrap();
    assert_eq!(ids, [2]);
}

#[test]
fn stream_limit_below_the_first_claim_guess_still_works() {
    let d = tempfile::tempdir().unwrap();
    // A 40-byte limit is below the publisher's 64-byte first guess.
    let s = stream(d.path(), StreamConfig::default().max_message_size(40));
    let mut p = Publisher::<OrderV2>::new(s.writer().unwrap());
    for id in 0..3 {
        p.send(&OrderV2 { id }).unwrap();
    }
    let mut sub = Subscriber::<OrderV2>::new(&s, Start::Beginning).unwrap();
    let mut ids = Vec::new();
    sub.poll(10, |o| ids.push(o.id.to_native())).unwrap();
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn wrong_type_and_wrong_schema_are_typed_errors_and_skipped() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    let mut w = s.writer().unwrap();
    let mut q = Publisher::<Quote>::new(w);
    let quote_pos = q.send(&quote::quote(0)).unwrap();
    w = q.into_writer();
    let mut v2 = Publisher::<OrderV2>::new(w);
    let v2_pos = v2.send(&OrderV2 { id: 9 }).unwrap();
    w = v2.into_writer();
    w.append(b"untyped bytes").unwrap();
    let mut o = Publisher::<Order>::new(w);
    o.send(&order(7)).unwrap();

    let mut sub = Subscriber::<Order>::new(&s, Start::Beginning).unwrap();
    let mut handled = 0;
    match sub.poll(10, |_| handled += 1) {
        Err(TypedError::WrongType {
            position,
            expected,
            found,
        }) => {
            assert_eq!(position, quote_pos);
            assert_eq!(expected, Order::TYPE_ID);
            assert_eq!(found, Quote::TYPE_ID);
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    match sub.poll(10, |_| handled += 1) {
        Err(TypedError::WrongSchema {
            position,
            expected: 3,
            found: 4,
            ..
        }) => assert_eq!(position, v2_pos),
        other => panic!("expected WrongSchema, got {other:?}"),
    }
    assert!(matches!(
        sub.poll(10, |_| handled += 1),
        Err(TypedError::WrongType { found: 0, .. })
    ));
    assert_eq!(handled, 0);
    let mut ids = Vec::new();
    assert_eq!(sub.poll(10, |o| ids.push(o.id.to_native())).unwrap(), 1);
    assert_eq!(ids, [7]);
}

/// Appends `payload` as if it were an `Order` frame (an untrusted writer).
fn forge(s: &Stream, payload: &[u8]) {
    let mut w = s.writer().unwrap();
    let opts = AppendOptions {
        type_id: Order::TYPE_ID,
        schema_version: Order::SCHEMA_VERSION,
        meta: b"",
    };
    w.append_with(&opts, payload).unwrap();
}

#[test]
fn validated_subscriber_rejects_corrupt_payloads() {
    let good = rkyv::to_bytes::<rkyv::rancor::Error>(&order(40)).unwrap();
    let root = std::mem::size_of::<ArchivedOrder>();
    assert!(good.len() > root, "order 40 has out-of-line data");
    let mut corrupt = Vec::new();
    // 1: the string's relative pointer aimed far outside the payload.
    let mut bad = good.to_vec();
    let base = bad.len() - root;
    // ArchivedOrder layout is id (8) then account (8: inline bytes or len + offset).
    let account = base + 8;
    bad[account + 4..account + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    corrupt.push(bad);
    // 2: an invalid bool.
    let mut bad = good.to_vec();
    let urgent = bad.len() - root + 8 + 8 + 8;
    bad[urgent] = 7;
    corrupt.push(bad);
    // 3: too short to hold the root.
    corrupt.push(good[..root - 3].to_vec());
    // 4: invalid UTF-8 in the out-of-line string bytes.
    let mut bad = good.to_vec();
    bad[0] = 0xff;
    corrupt.push(bad);

    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    for c in &corrupt {
        forge(&s, c);
    }
    forge(&s, &good);

    let mut sub = Subscriber::<Order>::new(&s, Start::Beginning).unwrap();
    for k in 0..corrupt.len() {
        match sub.poll(10, |o| {
            panic!("corrupt payload {k} reached the handler: {o:?}")
        }) {
            Err(TypedError::Invalid { source, .. }) => {
                assert!(!source.to_string().is_empty())
            }
            other => panic!("payload {k}: expected Invalid, got {other:?}"),
        }
    }
    let mut got = 0;
    sub.poll(10, |o| {
        check_order(&o, 40);
        got += 1;
    })
    .unwrap();
    assert_eq!(got, 1);

    // Unchecked access still refuses a payload shorter than the archived root.
    let d2 = tempfile::tempdir().unwrap();
    let short = stream(d2.path(), StreamConfig::default());
    forge(&short, &corrupt[2]);
    // SAFETY: the stream's only frame is refused before any archived value is formed.
    let trusted = unsafe { Access::unchecked() };
    let mut unchecked =
        Subscriber::<Order>::with_access(&short, Start::Beginning, trusted).unwrap();
    assert!(matches!(
        unchecked.poll(1, |_| panic!("short payload handled")),
        Err(TypedError::TooShort { need, .. }) if need == root
    ));
}

#[test]
fn ring_stream_round_trip_across_laps() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "ring",
        &StreamConfig::default().segment_size(64 << 10).ring(4),
    )
    .unwrap();
    let mut p = Publisher::<Order>::new(s.writer().unwrap());
    let mut sub = Subscriber::<Order>::new(&s, Start::Beginning).unwrap();
    let mut next = 0u64;
    // ~60 KiB per 500 orders: many laps of the 4 x 64 KiB ring, read as we go.
    for i in 0..20_000 {
        p.send(&order(i)).unwrap();
        if i % 100 == 99 {
            sub.poll(usize::MAX, |o| {
                check_order(&o, next);
                next += 1;
            })
            .unwrap();
        }
    }
    assert_eq!(next, 20_000);
}

#[test]
fn subscriber_over_a_named_cursor_resumes() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    let mut p = Publisher::<Order>::new(s.writer().unwrap());
    for i in 0..10 {
        p.send(&order(i)).unwrap();
    }
    let mut ids = Vec::new();
    {
        let cursor = s.named_reader("risk", CursorOptions::default()).unwrap();
        let mut sub = Subscriber::<Order, _>::from_source(&s, cursor, Access::Validated);
        sub.poll(4, |o| ids.push(o.id.to_native())).unwrap();
    }
    let cursor = s.named_reader("risk", CursorOptions::default()).unwrap();
    let mut sub = Subscriber::<Order, _>::from_source(&s, cursor, Access::Validated);
    sub.poll(100, |o| ids.push(o.id.to_native())).unwrap();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
}

#[test]
fn block_strategy_sleeps_until_a_commit_wakes_it() {
    let d = tempfile::tempdir().unwrap();
    let s = stream(d.path(), StreamConfig::default());
    let mut sub = Subscriber::<Quote>::new(&s, Start::End).unwrap();
    // Nothing there: a bounded wait times out.
    assert!(!sub.wait(Duration::from_millis(10)).unwrap());
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let mut p = Publisher::<Quote>::new(s2.writer().unwrap());
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(3));
            p.send(&quote::quote(i)).unwrap();
        }
    });
    // A blocking bound far beyond the test's run time: every return is a wake-up by a commit.
    let mut idler = Idler::new(IdleStrategy::Block(Duration::from_secs(600)));
    let mut n = 0;
    let mut idles = 0;
    while n < 20 {
        let got = sub
            .poll_idle(&mut idler, 100, |q| {
                assert!(quote::matches(&q, n));
                n += 1;
            })
            .unwrap();
        if got == 0 {
            idles += 1;
        }
    }
    t.join().unwrap();
    assert!(idles >= 1, "the subscriber blocked at least once");
}

#[test]
fn block_without_a_reader_is_refused() {
    let mut idler = Idler::new(IdleStrategy::BLOCK);
    assert_eq!(
        idler.idle(0),
        Err(ringway_core::idle::IdleError::NeedsWaiter)
    );
    assert_eq!(idler.idle(1), Ok(()));
}

#[test]
fn quote_fills_one_cache_line_with_its_header() {
    assert_eq!(
        ringway_core::frame::HEADER_LEN + std::mem::size_of::<quote::ArchivedQuote>(),
        64
    );
}

#[test]
fn quote_symbol_is_fixed_width() {
    assert_eq!(Symbol::new("EURUSD").0[..7], *b"EURUSD\0");
    assert_eq!(Symbol::new("A_VERY_LONG_SYMBOL").0, *b"A_VERY_L");
}

/// Environment variable that turns `quote_child_publisher` into the publisher process.
const CHILD_ROOT: &str = "RINGWAY_TYPED_TEST_ROOT";

/// The publisher side of `quotes_between_two_processes`; does nothing in a normal run.
#[test]
fn quote_child_publisher() {
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let o = quote::Options::parse(
        [
            "--root",
            root.to_str().unwrap(),
            "--count",
            "5000",
            "--rate",
            "100000",
        ]
        .map(String::from),
    )
    .unwrap();
    let r = quote::run_publisher(&o).unwrap();
    assert_eq!(r.sent, 5000);
}

#[test]
fn quotes_between_two_processes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_str().unwrap().to_string();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "quote_child_publisher",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ROOT, &root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let o = quote::Options::parse(
        [
            "--root",
            &root,
            "--count",
            "5000",
            "--from-start",
            "--idle",
            "block",
            "--timeout-secs",
            "120",
        ]
        .map(String::from),
    )
    .unwrap();
    let report = quote::run_subscriber(&o);
    let status = child.wait().unwrap();
    let report = report.unwrap();
    assert!(status.success(), "publisher process failed: {status}");
    assert_eq!(report.received, 5000);
    assert_eq!(report.mismatched, 0);
}

#[test]
fn typed_subscribers_share_a_consumer_group() {
    let d = tempfile::tempdir().unwrap();
    let stream = Stream::create(
        d.path(),
        "orders",
        &StreamConfig::default().segment_size(1 << 20),
    )
    .unwrap();
    let mut publisher = Publisher::<Order>::new(stream.writer().unwrap());
    for id in 0..100u64 {
        publisher
            .send(&Order {
                id,
                account: "acc".into(),
                legs: vec![1, 2],
                urgent: false,
            })
            .unwrap();
    }
    let member = |s: &Stream| {
        s.group_member("workers", ringway_core::GroupOptions::default())
            .unwrap()
    };
    let mut a = Subscriber::<Order, _>::from_source(&stream, member(&stream), Access::Validated);
    let mut b = Subscriber::<Order, _>::from_source(&stream, member(&stream), Access::Validated);
    let mut ids = Vec::new();
    loop {
        let n = a.poll(3, |o| ids.push(o.id.to_native())).unwrap()
            + b.poll(5, |o| ids.push(o.id.to_native())).unwrap();
        if n == 0 {
            break;
        }
    }
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..100).collect::<Vec<_>>(),
        "each order handled by exactly one member"
    );
}
