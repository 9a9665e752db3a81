//! [`AsrPool`]: a fixed number of worker threads, each with its own whisper
//! decoder, fed from one queue.
//!
//! whisper is CPU-bound for hundreds of milliseconds per utterance, so it runs
//! on dedicated OS threads, never on the async runtime. When every worker is
//! busy, requests wait in the queue (they are never dropped) and the time they
//! waited is reported in [`Transcript::queue_wait_s`].
//!
//! Two kinds of work may turn out not to be needed, and dropping their
//! [`Speculation`] cancels them (inside whisper if already running, for free
//! if still queued):
//! - [`AsrPool::speculate`] queues like any utterance: the call engine sends
//!   the words heard before a pause, which are usually the whole reply;
//! - [`AsrPool::speculate_if_idle`] runs only on a worker that is idle now,
//!   and gives way as soon as other work would otherwise wait: the call
//!   engine reads the words so far while the elder is still speaking.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::SpeechError;
use crate::recognizer::{DecodeOptions, Lang, Model, Transcript};

/// Niceness of the worker threads. Media must be sent every 20 ms while
/// whisper runs for hundreds of milliseconds: on a busy node the scheduler
/// should pick the packet over the decode. At +10 a worker gets about a tenth
/// of the CPU weight of a normal thread when both want the same core, and
/// all of it when the core is otherwise idle.
pub const WORKER_NICE: i32 = 10;

/// Lower the calling thread's scheduling priority (Linux: niceness is per
/// thread). Failure only costs packet timing, so it is logged, not fatal.
fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread; no memory is shared.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a speech worker; media may jitter while it decodes"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// CPU time the decodes of every pool in this process have taken so far,
/// by kind. Measured on the worker thread around each decode (Linux:
/// `CLOCK_THREAD_CPUTIME_ID`), so it is exact with one whisper thread per
/// worker (the default); with more, whisper's helper threads are not in it.
/// Cancelled decodes count for what they ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeCpu {
    /// [`AsrPool::transcribe`]: the words that must be heard.
    pub final_s: f64,
    pub final_n: u64,
    /// [`AsrPool::speculate`]: the words heard before a pause.
    pub speculative_s: f64,
    pub speculative_n: u64,
    /// [`AsrPool::speculate_if_idle`]: readings while the elder still speaks.
    pub partial_s: f64,
    pub partial_n: u64,
}

/// Nanoseconds and count of decodes, per kind: final, speculative, partial.
static DECODE_NS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static DECODE_N: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The decode CPU of this process so far (see [`DecodeCpu`]).
pub fn decode_cpu() -> DecodeCpu {
    let s = |k: usize| DECODE_NS[k].load(Ordering::Relaxed) as f64 / 1e9;
    let n = |k: usize| DECODE_N[k].load(Ordering::Relaxed);
    DecodeCpu {
        final_s: s(0),
        final_n: n(0),
        speculative_s: s(1),
        speculative_n: n(1),
        partial_s: s(2),
        partial_n: n(2),
    }
}

/// CPU time of the calling thread so far, nanoseconds (Linux:
/// `CLOCK_THREAD_CPUTIME_ID`); 0 where unknown.
pub fn thread_cpu_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec we own; no other memory is touched.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    0
}

/// One utterance to transcribe.
#[derive(Debug, Clone, Default)]
pub struct TranscribeRequest {
    /// Mono audio at 16 kHz.
    pub samples_16k: Vec<f32>,
    /// The elder's language, when known (it should be: detection is slower and less reliable).
    pub lang: Option<Lang>,
    /// An initial prompt; `None` uses the pool's default for the language.
    pub prompt: Option<String>,
}

struct Job {
    req: TranscribeRequest,
    queued: Instant,
    reply: oneshot::Sender<Result<Transcript, SpeechError>>,
    cancel: Option<Arc<AtomicBool>>,
    /// Gives way to work that would otherwise wait (see [`AsrPool::speculate_if_idle`]).
    yields: bool,
}

/// Cancel flags of the queued or running decodes that give way to waiting work.
type Yielding = Arc<Mutex<Vec<Arc<AtomicBool>>>>;

/// A transcription started by [`AsrPool::speculate`]. Await it for the
/// transcript; drop it to cancel the work.
#[derive(Debug)]
pub struct Speculation {
    rx: oneshot::Receiver<Result<Transcript, SpeechError>>,
    cancel: Arc<AtomicBool>,
}

impl Future for Speculation {
    type Output = Result<Transcript, SpeechError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(SpeechError::PoolClosed)))
    }
}

impl Drop for Speculation {
    fn drop(&mut self) {
        // After completion this changes nothing; before, it frees the worker.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The pool. Dropping it lets queued work finish, then stops the workers.
pub struct AsrPool {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    queued: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    yielding: Yielding,
}

impl std::fmt::Debug for AsrPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsrPool")
            .field("workers", &self.workers.len())
            .field("queued", &self.queue_len())
            .finish()
    }
}

impl AsrPool {
    /// Start `workers` threads, each decoding with `threads_per_worker` whisper threads
    /// and [`DecodeOptions::default`].
    pub fn new(
        model: &Model,
        workers: usize,
        threads_per_worker: usize,
    ) -> Result<Self, SpeechError> {
        let opts = DecodeOptions {
            threads: threads_per_worker.max(1),
            ..DecodeOptions::default()
        };
        Self::with_options(model, workers, opts)
    }

    /// Start a pool with explicit decoding options.
    pub fn with_options(
        model: &Model,
        workers: usize,
        opts: DecodeOptions,
    ) -> Result<Self, SpeechError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let yielding: Yielding = Arc::default();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            // Allocate each decoder up front so a missing model fails here, not mid-call.
            let mut rec = model.recognizer()?;
            let rx = Arc::clone(&rx);
            let queued = Arc::clone(&queued);
            let busy = Arc::clone(&busy);
            let yielding = Arc::clone(&yielding);
            let opts = opts.clone();
            let handle = std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || {
                    lower_thread_priority(WORKER_NICE);
                    loop {
                        let job = {
                            let Ok(guard) = rx.lock() else { return };
                            match guard.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        busy.fetch_add(1, Ordering::SeqCst);
                        queued.fetch_sub(1, Ordering::SeqCst);
                        let wait = job.queued.elapsed().as_secs_f64();
                        let r = &job.req;
                        let yields = job.cancel.as_ref().filter(|_| job.yields);
                        rec.set_cancel(job.cancel.clone());
                        let kind = match (&job.cancel, job.yields) {
                            (None, _) => 0,
                            (Some(_), false) => 1,
                            (Some(_), true) => 2,
                        };
                        let cpu0 = thread_cpu_ns();
                        let result = rec
                            .transcribe(&r.samples_16k, r.lang, r.prompt.as_deref(), &opts)
                            .map(|mut t| {
                                t.queue_wait_s = wait;
                                t
                            });
                        rec.set_cancel(None);
                        DECODE_NS[kind]
                            .fetch_add(thread_cpu_ns().saturating_sub(cpu0), Ordering::Relaxed);
                        DECODE_N[kind].fetch_add(1, Ordering::Relaxed);
                        if let (Some(flag), Ok(mut y)) = (yields, yielding.lock()) {
                            y.retain(|f| !Arc::ptr_eq(f, flag));
                        }
                        busy.fetch_sub(1, Ordering::SeqCst);
                        // The caller may have gone away; nothing to do then.
                        let _ = job.reply.send(result);
                    }
                })
                .map_err(|e| SpeechError::Whisper(format!("cannot start a worker thread: {e}")))?;
            handles.push(handle);
        }
        Ok(Self {
            tx: Some(tx),
            workers: handles,
            queued,
            busy,
            yielding,
        })
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Requests waiting for a free worker.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Workers neither decoding nor spoken for by a queued request.
    pub fn idle(&self) -> usize {
        self.workers
            .len()
            .saturating_sub(self.busy.load(Ordering::SeqCst) + self.queued.load(Ordering::SeqCst))
    }

    /// Transcribe one utterance. Waits in the queue when every worker is busy.
    pub async fn transcribe(&self, req: TranscribeRequest) -> Result<Transcript, SpeechError> {
        let rx = self.submit(req, None, false)?;
        rx.await.map_err(|_| SpeechError::PoolClosed)?
    }

    /// Transcribe words that may not be needed after all: queued like any
    /// utterance; dropping the [`Speculation`] cancels it.
    pub fn speculate(&self, req: TranscribeRequest) -> Result<Speculation, SpeechError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let rx = self.submit(req, Some(Arc::clone(&cancel)), false)?;
        Ok(Speculation { rx, cancel })
    }

    /// Start optional work only if a worker is idle now, so it never delays
    /// an utterance that must be heard: it is cancelled as soon as other work
    /// would have to wait for its worker. `None` when all are busy.
    pub fn speculate_if_idle(&self, req: TranscribeRequest) -> Option<Speculation> {
        if self.idle() == 0 {
            return None;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let rx = self.submit(req, Some(Arc::clone(&cancel)), true).ok()?;
        Some(Speculation { rx, cancel })
    }

    fn submit(
        &self,
        req: TranscribeRequest,
        cancel: Option<Arc<AtomicBool>>,
        yields: bool,
    ) -> Result<oneshot::Receiver<Result<Transcript, SpeechError>>, SpeechError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(SpeechError::PoolClosed)?;
        if !yields && self.idle() == 0 {
            // This would wait: the oldest optional decode gives way. whisper.cpp
            // notices after its encoder or its next token.
            if let Ok(mut y) = self.yielding.lock()
                && !y.is_empty()
            {
                y.remove(0).store(true, Ordering::Relaxed);
            }
        }
        if let (true, Some(flag), Ok(mut y)) = (yields, &cancel, self.yielding.lock()) {
            // Registered now, not when a worker takes it: needed work
            // submitted a moment later must find it.
            y.push(Arc::clone(flag));
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        if tx
            .send(Job {
                req,
                queued: Instant::now(),
                reply,
                cancel,
                yields,
            })
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SpeechError::PoolClosed);
        }
        Ok(rx)
    }
}

impl Drop for AsrPool {
    fn drop(&mut self) {
        self.tx.take();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}
