//! Example device application: one sensor task submitting readings, the ringway-firmware
//! session, and an embassy-net stack on a network driver. Built `#![no_std] #![no_main]` for
//! the host target: the C runtime calls `main`, which polls the application for a bounded
//! number of steps and prints the outbox counters.
//!
//! The network driver here is a stand-in for an Ethernet/Wi-Fi MAC driver: it reports the link
//! up, accepts frames for transmission and receives nothing, so the session keeps failing to
//! connect and backing off while readings accumulate (and overflow) in the offline buffer.
#![no_std]
#![no_main]

use core::fmt::Write as _;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embassy_net::{Ipv4Address, Ipv4Cidr, StaticConfigV4};
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Timer};
use ringway_firmware::wire::{ArchivedCommand, DeviceId, Quantity, Reading};
use ringway_firmware::{Outbox, OverflowPolicy, Session, SessionBuffers, SessionConfig};
use static_cell::StaticCell;

#[link(name = "c")]
unsafe extern "C" {
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    fn abort() -> !;
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const CLOCK_MONOTONIC: i32 = 1;

fn print(s: &str) {
    // SAFETY: `s` is a valid buffer of `s.len()` bytes for the duration of the call.
    let _ = unsafe { write(1, s.as_ptr(), s.len()) };
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    print("panic\n");
    // SAFETY: abort has no preconditions.
    unsafe { abort() }
}

/// libcore is precompiled with unwinding tables that name this symbol; with `panic = "abort"`
/// it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

// --- time driver: CLOCK_MONOTONIC in microseconds (embassy-time's default tick rate) ---
struct MonotonicDriver;

impl embassy_time_driver::Driver for MonotonicDriver {
    fn now(&self) -> u64 {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
    }

    fn schedule_wake(&self, _at: u64, waker: &Waker) {
        // The main loop polls continuously, so an immediate wake is enough.
        waker.wake_by_ref();
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: MonotonicDriver = MonotonicDriver);

// --- critical section: the application is single-threaded and has no interrupts ---
struct SingleThread;

// SAFETY: the program runs on one thread without signal handlers that take critical sections,
// so there is never concurrent access to protect against.
unsafe impl critical_section::Impl for SingleThread {
    unsafe fn acquire() -> critical_section::RawRestoreState {}
    unsafe fn release(_: critical_section::RawRestoreState) {}
}

critical_section::set_impl!(SingleThread);

// --- network driver stand-in ---
struct NullMac;
struct NullRx;
struct NullTx;

impl embassy_net_driver::RxToken for NullRx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(&mut [])
    }
}

impl embassy_net_driver::TxToken for NullTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = [0u8; 1514];
        f(&mut frame[..len.min(1514)])
    }
}

impl embassy_net_driver::Driver for NullMac {
    type RxToken<'a> = NullRx;
    type TxToken<'a> = NullTx;

    fn receive(&mut self, _cx: &mut Context) -> Option<(NullRx, NullTx)> {
        None
    }
    fn transmit(&mut self, _cx: &mut Context) -> Option<NullTx> {
        Some(NullTx)
    }
    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps
    }
    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 0x10])
    }
}

// --- defmt logger: raw defmt frames to stderr ---
#[cfg(feature = "defmt")]
mod logger {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    struct EncoderCell(UnsafeCell<defmt::Encoder>);

    // SAFETY: the encoder is only touched between `acquire` and `release`, which `TAKEN`
    // makes exclusive.
    unsafe impl Sync for EncoderCell {}

    static ENCODER: EncoderCell = EncoderCell(UnsafeCell::new(defmt::Encoder::new()));
    // Acquire/Release pair the encoder's accesses of consecutive log frames.
    static TAKEN: AtomicBool = AtomicBool::new(false);

    fn out(bytes: &[u8]) {
        // SAFETY: `bytes` is valid for `bytes.len()` bytes during the call.
        let _ = unsafe { super::write(2, bytes.as_ptr(), bytes.len()) };
    }

    #[defmt::global_logger]
    struct Logger;

    // SAFETY: `acquire` refuses re-entrance via `TAKEN`, so frames never interleave.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            if TAKEN.swap(true, Ordering::Acquire) {
                super::print("defmt logger re-entered\n");
                // SAFETY: abort has no preconditions.
                unsafe { super::abort() }
            }
            // SAFETY: exclusive access established just above.
            unsafe { (*ENCODER.0.get()).start_frame(out) }
        }

        unsafe fn flush() {}

        unsafe fn release() {
            // SAFETY: called after `acquire`, so access is exclusive.
            unsafe { (*ENCODER.0.get()).end_frame(out) };
            TAKEN.store(false, Ordering::Release);
        }

        unsafe fn write(bytes: &[u8]) {
            // SAFETY: called between `acquire` and `release`.
            unsafe { (*ENCODER.0.get()).write(bytes, out) }
        }
    }
}

// --- the application ---
const RING: usize = 64;
const WINDOW: usize = 8;

static OUTBOX: Outbox<CriticalSectionRawMutex, RING> =
    Outbox::new(DeviceId(0x10), 1, OverflowPolicy::DropOldest);
static RESOURCES: StaticCell<embassy_net::StackResources<3>> = StaticCell::new();
static TCP_RX: StaticCell<[u8; 1024]> = StaticCell::new();
static TCP_TX: StaticCell<[u8; 1024]> = StaticCell::new();
static MQTT_RX: StaticCell<[u8; 256]> = StaticCell::new();
static MQTT_TX: StaticCell<[u8; 2048]> = StaticCell::new();

async fn sensor_task() {
    let mut t = 0u64;
    loop {
        let readings = [
            Reading::new(0, Quantity::Temperature, 20.0 + (t % 10) as f32 / 10.0),
            Reading::new(1, Quantity::Voltage, 3.3),
        ];
        let _ = OUTBOX.submit(t, &readings);
        t += 1;
        Timer::after(Duration::from_micros(50)).await;
    }
}

struct Counter(u32);

impl Counter {
    fn on(&mut self, _cmd: &ArchivedCommand) {
        self.0 += 1;
    }
}

fn poll_steps<F: Future>(fut: F, steps: u32) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..steps {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> core::fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 10), 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    let (stack, mut runner) = embassy_net::new(
        NullMac,
        config,
        RESOURCES.init(embassy_net::StackResources::new()),
        0x5eed,
    );

    let mut session_config = SessionConfig::new((Ipv4Address::new(192, 0, 2, 1), 1883).into());
    session_config.connect_timeout = Duration::from_millis(5);
    session_config.backoff.initial = Duration::from_millis(1);
    session_config.backoff.max = Duration::from_millis(4);
    let mut session = match Session::<_, RING, WINDOW>::new(stack, &OUTBOX, session_config) {
        Ok(s) => s,
        Err(_) => return 2,
    };
    let buffers = SessionBuffers {
        tcp_rx: TCP_RX.init([0; 1024]),
        tcp_tx: TCP_TX.init([0; 1024]),
        mqtt_rx: MQTT_RX.init([0; 256]),
        mqtt_tx: MQTT_TX.init([0; 2048]),
    };
    let mut commands = Counter(0);
    let mut handler = |c: &ArchivedCommand| commands.on(c);

    let app = embassy_futures::join::join3(
        runner.run(),
        session.run(buffers, &mut handler),
        sensor_task(),
    );
    let steps = 200_000;
    let finished = poll_steps(app, steps).is_some();

    let s = OUTBOX.stats();
    let mut line = Line::<256> {
        buf: [0; 256],
        len: 0,
    };
    let _ = writeln!(
        line,
        "steps={steps} finished={finished} submitted={} buffered={} dropped={} connects={} failures={}",
        s.submitted, s.buffered, s.dropped, s.connects, s.connection_failures
    );
    if let Ok(text) = core::str::from_utf8(&line.buf[..line.len]) {
        print(text);
    }
    let _ = commands.0;
    #[cfg(feature = "defmt")]
    defmt::info!(
        "image done: submitted={=u64} buffered={=usize} dropped={=u64} failures={=u64}",
        s.submitted,
        s.buffered,
        s.dropped,
        s.connection_failures
    );
    if s.submitted > 0 && s.buffered == RING.min(s.submitted as usize) {
        0
    } else {
        1
    }
}
