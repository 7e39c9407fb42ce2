//! Span export off the request path: a bounded queue and one export thread.
//!
//! A request ending a span only tries to put it in the queue; a full queue drops it and
//! counts it (`tailbridge_trace_spans_dropped_total{reason="queue_full"}`). The export
//! thread sends batches (OTLP/HTTP protobuf) and counts what the collector refused or never
//! acknowledged (`reason="export_failed"`). A slow, down or refusing collector therefore
//! costs spans, never request time.
//!
//! Why not the SDK's `BatchSpanProcessor`: it counts its drops only for its own shutdown
//! report, not in a metric, and the exporter must live on a thread that owns it whole.
//! The HTTP client is reqwest's *blocking* one, built and dropped on the export thread:
//! reqwest's async client panics on an SDK export thread that has no Tokio reactor
//! (opentelemetry-rust #3125), and a blocking client may be neither built nor dropped
//! inside the proxy's runtime.

use super::settings::Settings;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use prometheus::{IntCounter, IntCounterVec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// How often at most an export failure is logged.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the queue carries. Spans move through it as they are (no box: no allocation
/// per span on the request path).
#[allow(clippy::large_enum_variant)]
enum Msg {
    Span(SpanData),
    /// Export everything queued before this, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// The span counters (`tailbridge_trace_spans_*`).
#[derive(Clone)]
pub struct Counters {
    pub queue_full: IntCounter,
    pub export_failed: IntCounter,
    pub shutdown: IntCounter,
    pub exported: IntCounter,
}

impl Counters {
    pub fn new(dropped: &IntCounterVec, exported: &IntCounter) -> Self {
        Counters {
            queue_full: dropped.with_label_values(&["queue_full"]),
            export_failed: dropped.with_label_values(&["export_failed"]),
            shutdown: dropped.with_label_values(&["shutdown"]),
            exported: exported.clone(),
        }
    }
}

/// The span processor: the queue's sending end.
pub struct Pipeline {
    tx: SyncSender<Msg>,
    counters: Counters,
    closed: AtomicBool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

/// Something that sends a batch; the OTLP exporter in production.
pub trait BatchSink: Send + 'static {
    fn send_batch(&mut self, batch: Vec<SpanData>) -> OTelSdkResult;
}

impl<E: SpanExporter + 'static> BatchSink for E {
    fn send_batch(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
        futures::executor::block_on(self.export(batch))
    }
}

impl Pipeline {
    /// Start the export thread. `make` builds the exporter on that thread (so that a
    /// blocking HTTP client never lives in an async runtime); an error there is logged
    /// and every span is then counted as failed.
    pub fn start<S, F>(settings: &Settings, counters: Counters, make: F) -> std::io::Result<Self>
    where
        S: BatchSink,
        F: FnOnce() -> Result<S, String> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Msg>(settings.queue);
        let (batch, delay) = (settings.batch, settings.delay);
        let c = counters.clone();
        let target = settings.traces_url.to_string();
        std::thread::Builder::new()
            .name("tailbridge-trace-export".into())
            .spawn(move || {
                // The export's own HTTP calls are never traced.
                let _quiet = opentelemetry::Context::enter_telemetry_suppressed_scope();
                let mut exporter = match make() {
                    Ok(e) => Some(e),
                    Err(e) => {
                        log::error!("tracing: cannot build the OTLP exporter: {e}");
                        None
                    }
                };
                let mut out = Batcher {
                    spans: Vec::with_capacity(batch),
                    max: batch,
                    counters: c,
                    target,
                    logged_at: None,
                };
                let mut due = Instant::now() + delay;
                loop {
                    let wait = due.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(Msg::Span(s)) => {
                            out.spans.push(s);
                            if out.spans.len() >= out.max {
                                out.send(&mut exporter);
                                due = Instant::now() + delay;
                            }
                        }
                        Ok(Msg::Flush(ack)) => {
                            out.send(&mut exporter);
                            let _ = ack.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            out.send(&mut exporter);
                            due = Instant::now() + delay;
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            out.send(&mut exporter);
                            return;
                        }
                    }
                }
            })?;
        Ok(Pipeline {
            tx,
            counters,
            closed: AtomicBool::new(false),
        })
    }

    /// Export what is queued, waiting at most `budget`. Spans still queued after it are
    /// lost with the process (counted as `shutdown` drops when they arrive later).
    pub fn flush(&self, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The export thread's pending batch.
struct Batcher {
    spans: Vec<SpanData>,
    max: usize,
    counters: Counters,
    target: String,
    logged_at: Option<Instant>,
}

impl Batcher {
    fn send<S: BatchSink>(&mut self, exporter: &mut Option<S>) {
        if self.spans.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.spans, Vec::with_capacity(self.max));
        let n = batch.len() as u64;
        let result = match exporter {
            Some(e) => e.send_batch(batch),
            None => Err(OTelSdkError::InternalFailure("no exporter".into())),
        };
        match result {
            Ok(()) => self.counters.exported.inc_by(n),
            Err(e) => {
                self.counters.export_failed.inc_by(n);
                if self
                    .logged_at
                    .is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY)
                {
                    self.logged_at = Some(Instant::now());
                    log::warn!(
                        "tracing: export to {} failed, {n} span(s) dropped (counted in \
                         tailbridge_trace_spans_dropped_total; logged once a minute): {e}",
                        self.target
                    );
                }
            }
        }
    }
}

impl SpanProcessor for Pipeline {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.closed.load(Ordering::Relaxed) {
            self.counters.shutdown.inc();
            return;
        }
        match self.tx.try_send(Msg::Span(span)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.queue_full.inc(),
            Err(TrySendError::Disconnected(_)) => self.counters.shutdown.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.flush(Duration::from_secs(5)) {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(Duration::from_secs(5)))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Once only: the provider shuts its processors down again when it is dropped.
        if self.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let flushed = self.flush(timeout);
        if flushed {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use std::sync::{Arc, Mutex};

    fn counters() -> Counters {
        let dropped = IntCounterVec::new(prometheus::Opts::new("d", "d"), &["reason"]).unwrap();
        Counters::new(&dropped, &IntCounter::new("e", "e").unwrap())
    }

    fn span(n: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(n as u128 + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "s".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn settings(queue: usize, batch: usize) -> Settings {
        Settings {
            traces_url: url::Url::parse("http://127.0.0.1:9/v1/traces").unwrap(),
            headers: Vec::new(),
            ratio: 1.0,
            service_name: "t".into(),
            queue,
            batch,
            delay: Duration::from_millis(20),
            export_timeout: Duration::from_secs(1),
            warnings: Vec::new(),
        }
    }

    /// A collector stand-in: records batches, or blocks until released, or fails.
    struct Fake {
        got: Arc<Mutex<Vec<usize>>>,
        gate: Option<mpsc::Receiver<()>>,
        fail: bool,
    }

    impl BatchSink for Fake {
        fn send_batch(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Some(g) = &self.gate {
                let _ = g.recv();
            }
            self.got.lock().unwrap().push(batch.len());
            if self.fail {
                Err(OTelSdkError::InternalFailure("refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn batches_by_size_and_by_time() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let c = counters();
        let p = Pipeline::start(&settings(100, 4), c.clone(), move || {
            Ok(Fake {
                got: g,
                gate: None,
                fail: false,
            })
        })
        .unwrap();
        for i in 0..6 {
            p.on_end(span(i));
        }
        assert!(p.flush(Duration::from_secs(5)));
        let sizes = got.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert_eq!(sizes[0], 4);
        assert_eq!(c.exported.get(), 6);
        assert_eq!(c.queue_full.get(), 0);
    }

    #[test]
    fn a_stuck_collector_costs_spans_not_time() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = mpsc::channel();
        let g = got.clone();
        let c = counters();
        let p = Pipeline::start(&settings(4, 1), c.clone(), move || {
            Ok(Fake {
                got: g,
                gate: Some(gate),
                fail: true,
            })
        })
        .unwrap();
        let started = Instant::now();
        for i in 0..50 {
            p.on_end(span(i));
        }
        // ending 50 spans never waited for the collector
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(c.queue_full.get() >= 40, "{}", c.queue_full.get());
        // a flush gives up within its budget while the export hangs
        let t = Instant::now();
        assert!(!p.flush(Duration::from_millis(200)));
        assert!(t.elapsed() < Duration::from_secs(5));
        for _ in 0..60 {
            let _ = release.send(());
        }
        assert!(p.flush(Duration::from_secs(5)));
        assert_eq!(
            c.queue_full.get() + c.export_failed.get(),
            50,
            "every span is exported or counted"
        );
        p.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        p.on_end(span(99));
        assert_eq!(c.shutdown.get(), 1);
    }

    #[test]
    fn no_exporter_counts_everything_as_failed() {
        let c = counters();
        let p = Pipeline::start(&settings(10, 10), c.clone(), || {
            Err::<Fake, _>("bad".into())
        })
        .unwrap();
        p.on_end(span(1));
        assert!(p.flush(Duration::from_secs(5)));
        assert_eq!(c.export_failed.get(), 1);
    }
}
