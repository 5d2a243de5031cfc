//! Shared pieces of Huddle's fuzz targets: the virtual clock the engines run
//! on, bounded fuzzed text, picking from a small universe of names, and the
//! check that an engine answered each request exactly once.
//!
//! Owns no engine state and decides nothing about an engine's rules; never
//! does I/O, and never reads the real clock after a clock is made (every
//! instant an engine sees is the start plus fuzzed steps).

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use huddle::core::engine::{Effect, Now};

/// Most operations one fuzz input runs (the rest of a long input is ignored).
pub const MAX_OPS: usize = 64;

/// The Unix time (ms) a virtual clock starts at.
pub const START_UNIX_MS: i64 = 1_800_000_000_000;

/// Time as the engines see it: a fixed start plus fuzzed steps, monotonic
/// and wall clock moving together.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    start: Instant,
    elapsed_ms: u64,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed_ms: 0,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Now {
        Now {
            mono: self.start + Duration::from_millis(self.elapsed_ms),
            unix_ms: START_UNIX_MS + self.elapsed_ms as i64,
        }
    }

    /// Moves time forward (never back).
    pub fn advance_ms(&mut self, ms: u64) {
        self.elapsed_ms = self.elapsed_ms.saturating_add(ms);
    }

    /// Milliseconds since the clock was made.
    pub fn elapsed_ms(&self) -> u64 {
        self.elapsed_ms
    }
}

/// `items[index % len]`; `items` must not be empty.
pub fn pick<T: Clone>(items: &[T], index: u8) -> T {
    items[usize::from(index) % items.len()].clone()
}

/// Fuzzed text: a name from the target's pool, free text, or one unit
/// repeated (to reach length limits counted in bytes or in characters).
#[derive(Arbitrary, Debug, Clone)]
pub enum FuzzText {
    Pick(u8),
    Free(String),
    Repeat { unit: u8, count: u16 },
}

/// Units a [`FuzzText::Repeat`] repeats: one, two and four UTF-8 bytes.
const UNITS: [&str; 3] = ["x", "é", "🎮"];

impl FuzzText {
    /// The text, at most `max_chars` characters long.
    pub fn render(&self, pool: &[&str], max_chars: usize) -> String {
        let text = match self {
            FuzzText::Pick(i) if !pool.is_empty() => pick(pool, *i).to_string(),
            FuzzText::Pick(_) => String::new(),
            FuzzText::Free(s) => s.clone(),
            FuzzText::Repeat { unit, count } => {
                pick(&UNITS, *unit).repeat(usize::from(*count).min(max_chars))
            }
        };
        text.chars().take(max_chars).collect()
    }
}

/// The request ids `out` answers: each `Reply` and `Fail`, plus whatever
/// `deferred` names (effects that answer later, such as a warm-up).
pub fn answered(out: &[Effect], deferred: impl Fn(&Effect) -> Option<u64>) -> Vec<u64> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Reply { request_id, .. } | Effect::Fail { request_id, .. } => Some(*request_id),
            other => deferred(other),
        })
        .collect()
}

/// Panics unless `out` answers exactly `request` (once), or nothing when
/// `request` is `None`.
pub fn assert_answered_once(
    out: &[Effect],
    request: Option<u64>,
    deferred: impl Fn(&Effect) -> Option<u64>,
) {
    let got = answered(out, deferred);
    let want: Vec<u64> = request.into_iter().collect();
    assert_eq!(got, want, "answers in {out:#?}");
}

/// Panics when a refusal came with other effects: a `Fail` means nothing
/// changed, so nothing else may go out with it.
pub fn assert_refusal_alone(out: &[Effect]) {
    if out.iter().any(|e| matches!(e, Effect::Fail { .. })) {
        assert_eq!(out.len(), 1, "a refusal with other effects: {out:#?}");
    }
}
