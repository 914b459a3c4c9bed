//! Progress events and their two renderers. Library code emits [`Event`]s through a
//! [`Reporter`]; the CLI chooses the renderer: [`PlainReporter`] (one line per event, for
//! CI logs and `--progress=plain`) or [`TtyReporter`] (indicatif bars, one line per
//! running step).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Where a step sits in the build, as shown to the user: `[stage-1 3/7]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepLabel {
    /// The stage's name (`AS name`), else `stage-N`.
    pub stage: String,
    /// 1-based position among the steps of its stage, and their number.
    pub index: usize,
    pub total: usize,
    /// The instruction as written (continuations joined).
    pub text: String,
}

impl std::fmt::Display for StepLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} {}/{}]", self.stage, self.index, self.total)
    }
}

/// Something that happened during a build, pull or push.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A step began running (its cache key missed, or it has no cache).
    StepStarted(&'a StepLabel),
    /// A step was satisfied from the cache.
    StepCached(&'a StepLabel),
    /// Why a step's cache key missed: the first input that changed.
    CacheMiss {
        step: &'a StepLabel,
        reason: &'a str,
    },
    /// Bytes processed by a running step (copies, hashing).
    StepBytes {
        step: &'a StepLabel,
        done: u64,
        total: Option<u64>,
    },
    /// A line of output from a running step.
    StepOutput {
        step: &'a StepLabel,
        line: &'a str,
    },
    StepDone {
        step: &'a StepLabel,
        elapsed: Duration,
    },
    /// A registry transfer's layer changed state, worded as docker words it (`Pulling fs
    /// layer`, `Download complete`, `Pull complete`, `Pushed`, `Layer already exists`,
    /// `Mounted from REPO`). `id` is the layer's short digest.
    Layer {
        id: &'a str,
        status: &'a str,
    },
    /// Bytes of a layer moved so far (download or upload); plain logs skip these.
    LayerBytes {
        id: &'a str,
        done: u64,
        total: Option<u64>,
    },
    /// A free-standing message (warnings, summaries).
    Message(&'a str),
    Warning(&'a str),
}

/// Receives progress events; must be cheap and thread-safe (stages run in parallel).
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Drops every event (`-q`, tests).
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&self, _: Event<'_>) {}
}

/// One line per event, for logs: grep finds `CACHED` on the step's own line.
pub struct PlainReporter<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> PlainReporter<W> {
    pub fn new(out: W) -> Self {
        PlainReporter {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The text of an event as one plain line, or None for events plain logs skip.
pub fn plain_line(event: &Event<'_>) -> Option<String> {
    Some(match event {
        Event::StepStarted(s) => format!("{s} {}", s.text),
        Event::StepCached(s) => format!("{s} CACHED {}", s.text),
        Event::CacheMiss { step, reason } => {
            format!("{step} cache miss: {}: {reason}", step.text)
        }
        Event::StepBytes { .. } | Event::LayerBytes { .. } => return None,
        Event::Layer { id, status } => format!("{id}: {status}"),
        Event::StepOutput { step, line } => format!("{step} {line}"),
        Event::StepDone { step, elapsed } => {
            format!("{step} DONE {:.2}s", elapsed.as_secs_f64())
        }
        Event::Message(m) => m.to_string(),
        Event::Warning(m) => format!("WARNING: {m}"),
    })
}

impl<W: Write + Send> Reporter for PlainReporter<W> {
    fn event(&self, event: Event<'_>) {
        if let Some(line) = plain_line(&event) {
            let mut out = match self.out.lock() {
                Ok(o) => o,
                Err(p) => p.into_inner(),
            };
            // A closed stderr must not fail the build.
            let _ = writeln!(out, "{line}");
        }
    }
}

/// indicatif bars: a spinner per running step, bytes for big copies; finished steps stay
/// as one line each.
pub struct TtyReporter {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<StepLabel, indicatif::ProgressBar>>,
    /// One bar per layer of a pull or push, keyed by the layer's short digest.
    layers: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

/// Layer states after which nothing more happens to the layer.
fn layer_finished(status: &str) -> bool {
    matches!(
        status,
        "Pull complete" | "Already exists" | "Pushed" | "Layer already exists"
    ) || status.starts_with("Mounted from")
}

impl Default for TtyReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl TtyReporter {
    pub fn new() -> Self {
        TtyReporter {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: Mutex::new(std::collections::HashMap::new()),
            layers: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The bar of layer `id`, made on first use.
    fn layer_bar(&self, id: &str) -> indicatif::ProgressBar {
        let mut layers = match self.layers.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        layers
            .entry(id.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(indicatif::ProgressBar::new(0));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix}: {msg:22} {wide_bar} {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_prefix(id.to_string());
                bar
            })
            .clone()
    }

    fn bars(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<StepLabel, indicatif::ProgressBar>>
    {
        match self.bars.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        }
    }
}

impl Reporter for TtyReporter {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::StepStarted(s) => {
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_prefix(s.to_string());
                bar.set_message(s.text.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bars().insert(s.clone(), bar);
            }
            Event::StepBytes { step, done, total } => {
                if let Some(bar) = self.bars().get(step) {
                    if let Some(t) = total {
                        bar.set_length(t);
                        bar.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{spinner} {prefix} {msg} {bytes}/{total_bytes} {elapsed}",
                            )
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                        );
                    }
                    bar.set_position(done);
                }
            }
            Event::StepDone { step, elapsed } => {
                if let Some(bar) = self.bars().remove(step) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(format!(
                    "✔ {step} {} {:.2}s",
                    step.text,
                    elapsed.as_secs_f64()
                ));
            }
            Event::Layer { id, status } => {
                let bar = self.layer_bar(id);
                if layer_finished(status) {
                    // The bar stays as the layer's final line, as docker leaves it.
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{prefix}: {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    bar.finish_with_message(status.to_string());
                } else {
                    bar.set_message(status.to_string());
                }
            }
            Event::LayerBytes { id, done, total } => {
                let bar = self.layer_bar(id);
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
            }
            other => {
                if let Some(line) = plain_line(&other) {
                    let _ = self.multi.println(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_steps_hold_the_word_on_their_own_line() {
        let r = PlainReporter::new(Vec::new());
        let s = StepLabel {
            stage: "stage-1".into(),
            index: 3,
            total: 7,
            text: "COPY requirements.txt /app/".into(),
        };
        r.event(Event::StepCached(&s));
        r.event(Event::CacheMiss {
            step: &s,
            reason: "requirements.txt changed",
        });
        let out = String::from_utf8(r.into_inner()).unwrap();
        assert_eq!(
            out,
            "[stage-1 3/7] CACHED COPY requirements.txt /app/\n\
             [stage-1 3/7] cache miss: COPY requirements.txt /app/: requirements.txt changed\n"
        );
    }

    #[test]
    fn layer_states_are_lines_and_byte_counts_are_not() {
        let r = PlainReporter::new(Vec::new());
        r.event(Event::Layer {
            id: "0123456789ab",
            status: "Pulling fs layer",
        });
        r.event(Event::LayerBytes {
            id: "0123456789ab",
            done: 10,
            total: Some(20),
        });
        r.event(Event::Layer {
            id: "0123456789ab",
            status: "Pull complete",
        });
        let out = String::from_utf8(r.into_inner()).unwrap();
        assert_eq!(
            out,
            "0123456789ab: Pulling fs layer\n0123456789ab: Pull complete\n"
        );
        assert!(layer_finished("Mounted from library/busybox"));
        assert!(!layer_finished("Download complete"));
    }
}
