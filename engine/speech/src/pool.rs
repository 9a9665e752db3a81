//! [`AsrPool`]: a fixed number of worker threads, each with its own whisper
//! decoder, fed from one queue.
//!
//! whisper is CPU-bound for hundreds of milliseconds per utterance, so it runs
//! on dedicated OS threads, never on the async runtime. When every worker is
//! busy, requests wait in the queue (they are never dropped) and the time they
//! waited is reported in [`Transcript::queue_wait_s`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::SpeechError;
use crate::recognizer::{DecodeOptions, Lang, Model, Transcript};

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
}

/// The pool. Dropping it lets queued work finish, then stops the workers.
pub struct AsrPool {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    queued: Arc<AtomicUsize>,
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
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            // Allocate each decoder up front so a missing model fails here, not mid-call.
            let mut rec = model.recognizer()?;
            let rx = Arc::clone(&rx);
            let queued = Arc::clone(&queued);
            let opts = opts.clone();
            let handle = std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let Ok(guard) = rx.lock() else { return };
                            match guard.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        queued.fetch_sub(1, Ordering::SeqCst);
                        let wait = job.queued.elapsed().as_secs_f64();
                        let r = &job.req;
                        let result = rec
                            .transcribe(&r.samples_16k, r.lang, r.prompt.as_deref(), &opts)
                            .map(|mut t| {
                                t.queue_wait_s = wait;
                                t
                            });
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

    /// Transcribe one utterance. Waits in the queue when every worker is busy.
    pub async fn transcribe(&self, req: TranscribeRequest) -> Result<Transcript, SpeechError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(SpeechError::PoolClosed)?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        if tx
            .send(Job {
                req,
                queued: Instant::now(),
                reply,
            })
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(SpeechError::PoolClosed);
        }
        rx.await.map_err(|_| SpeechError::PoolClosed)?
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
