//! Zero heap allocations per message in steady state: `Publisher::send` and typed receive,
//! validated and unchecked, counted by a global allocator on the calling thread.

#[path = "../examples/quote/mod.rs"]
mod quote;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use quote::Quote;
use ringway_core::typed::{Access, Publisher, Subscriber};
use ringway_core::{Start, Stream, StreamConfig};

/// Counts allocations made by the current thread (other test threads do not disturb it).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a const-
// initialised thread-local without destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

/// A variable-size message, so that out-of-line data goes through the serializer too.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Fill {
    order_id: u64,
    venue: String,
    legs: Vec<u32>,
}
ringway_core::message!(Fill, type_id = 0x4649_4c4c, schema = 1);

const WARMUP: u64 = 1_000;
const MEASURED: u64 = 20_000;

/// Sends and receives `WARMUP + MEASURED` messages one at a time; returns the allocations made
/// by this thread during the measured part.
fn measure<T: ringway_core::typed::Message>(
    cfg: StreamConfig,
    access: Access,
    mut value: T,
    mut update: impl FnMut(u64, &mut T),
    mut check: impl FnMut(u64, &T::Archived),
) -> u64 {
    let d = tempfile::tempdir().unwrap();
    // Large segments: no segment roll (which maps a file) inside the measured window.
    let s = Stream::create(d.path(), "a", &cfg.segment_size(16 << 20)).unwrap();
    let mut publisher = Publisher::<T>::new(s.writer().unwrap());
    let mut subscriber = Subscriber::<T>::with_access(&s, Start::Beginning, access).unwrap();
    let mut step = |i: u64| {
        update(i, &mut value);
        publisher.send(&value).unwrap();
        let n = subscriber.poll(1, |r| check(i, &r)).unwrap();
        assert_eq!(n, 1);
    };
    for i in 0..WARMUP {
        step(i);
    }
    let before = allocations();
    for i in WARMUP..WARMUP + MEASURED {
        step(i);
    }
    allocations() - before
}

fn quotes(cfg: StreamConfig, access: Access) -> u64 {
    measure::<Quote>(
        cfg,
        access,
        quote::quote(0),
        |i, q| {
            *q = quote::quote(i);
            q.ts = i;
        },
        |i, q| {
            assert!(quote::matches(q, i));
            assert_eq!(q.ts.to_native(), i);
        },
    )
}

#[test]
fn quotes_validated_allocate_nothing_per_message() {
    assert_eq!(quotes(StreamConfig::default(), Access::Validated), 0);
}

#[test]
fn quotes_unchecked_allocate_nothing_per_message() {
    // SAFETY: the only writer is the Quote publisher of this test; append-only stream.
    let access = unsafe { Access::unchecked() };
    assert_eq!(quotes(StreamConfig::default(), access), 0);
}

#[test]
fn quotes_validated_on_a_ring_allocate_nothing_per_message() {
    // Validated reads of a ring stream copy into a reused buffer.
    assert_eq!(
        quotes(StreamConfig::default().ring(4), Access::Validated),
        0
    );
}

#[test]
fn variable_size_messages_allocate_nothing_per_message() {
    // One value whose contents change size every message, within capacity reserved up front:
    // building the value allocates nothing, so every allocation counted is the journal's.
    let fill = Fill {
        order_id: 0,
        venue: String::with_capacity(64),
        legs: Vec::with_capacity(16),
    };
    let made = measure::<Fill>(
        StreamConfig::default(),
        Access::Validated,
        fill,
        |i, f| {
            f.order_id = i;
            f.venue.clear();
            for _ in 0..(i % 7) {
                f.venue.push_str("XLON-");
            }
            f.legs.clear();
            f.legs.extend(0..(i % 11) as u32);
        },
        |i, f| {
            assert_eq!(f.order_id.to_native(), i);
            assert_eq!(f.venue.len(), 5 * (i % 7) as usize);
            assert_eq!(f.legs.len(), (i % 11) as usize);
        },
    );
    assert_eq!(made, 0);
}

#[test]
fn the_counter_sees_allocations_of_this_thread() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 32]);
    assert_eq!(allocations() - before, 1);
    drop(v);
}
