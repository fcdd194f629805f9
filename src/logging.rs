//! Where the daemon's log lines go: stderr (journald under systemd), with
//! the lines of a busy runtime worker gathered into few writes.
//!
//! Every credential request leaves an audit line, so at full load the log
//! is written as often as requests are answered. Written one `write` per
//! line, it costs a system call per request; handed to a writer thread,
//! it costs a wake-up of a third busy thread on cores the workers need.
//! Instead each tokio worker thread keeps its own lines and writes them
//! together:
//!
//! - when it runs out of work and is about to park ([`flush`], called from
//!   the runtime's park hook), so a lightly loaded daemon writes each line
//!   at once;
//! - when [`BATCH_BYTES`] have gathered, or the oldest held line is
//!   [`MAX_HOLD`] old, so a worker that never parks still writes often.
//!
//! Threads that have never parked as a worker (the main thread, the
//! blocking pool) write each line directly. Each write holds whole lines,
//! so lines never interleave; lines from two workers may reach stderr out
//! of timestamp order by up to [`MAX_HOLD`]. Lines still held when the
//! process is killed with SIGKILL are lost; on a normal exit the workers
//! park or stop first, which writes them.

use std::cell::RefCell;
use std::io::Write;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// A worker writes once this much has gathered: a few hundred audit lines.
pub const BATCH_BYTES: usize = 32 * 1024;
/// No line is held longer than this by a worker that keeps running.
pub const MAX_HOLD: Duration = Duration::from_millis(50);

thread_local! {
    /// `Some` on a worker thread that batches; `None` elsewhere.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Lines a thread holds, oldest first.
#[derive(Debug, Default)]
struct Held {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

impl Held {
    /// Adds `line`, and writes everything held to `out` when the batch is
    /// full or its oldest line too old.
    fn push(&mut self, line: &[u8], now: Instant, out: &mut impl Write) -> std::io::Result<()> {
        self.bytes.extend_from_slice(line);
        let since = *self.since.get_or_insert(now);
        if self.bytes.len() >= BATCH_BYTES || now.duration_since(since) >= MAX_HOLD {
            self.write_to(out)?;
        }
        Ok(())
    }

    fn write_to(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.since = None;
        if self.bytes.is_empty() {
            return Ok(());
        }
        let result = out.write_all(&self.bytes);
        self.bytes.clear();
        result
    }
}

/// Writes the lines this thread holds, and from now on lets it hold lines.
/// For the runtime's `on_thread_park` hook (only worker threads park) and
/// its `on_thread_stop` hook.
pub fn flush() {
    HELD.with(|held| {
        let Ok(mut held) = held.try_borrow_mut() else {
            return;
        };
        let held = held.get_or_insert_with(|| Held {
            bytes: Vec::with_capacity(BATCH_BYTES),
            since: None,
        });
        if !held.bytes.is_empty() {
            let _ = held.write_to(&mut std::io::stderr().lock());
        }
    });
}

/// The `tracing_subscriber` writer for the daemon: see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.write_all(line)?;
        Ok(line.len())
    }

    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        HELD.with(|held| match held.try_borrow_mut().as_deref_mut() {
            Ok(Some(held)) => held.push(line, Instant::now(), &mut std::io::stderr().lock()),
            // Not a worker, or a line logged while writing one: no holding.
            _ => std::io::stderr().lock().write_all(line),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_held_until_a_batch_fills_then_written_whole_and_in_order() {
        let mut held = Held::default();
        let mut out = Vec::new();
        let start = Instant::now();
        let line = [b'x'; 99]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let lines_per_batch = BATCH_BYTES.div_ceil(line.len());
        for _ in 0..lines_per_batch - 1 {
            held.push(&line, start, &mut out).unwrap();
        }
        assert!(out.is_empty(), "nothing is written before the batch fills");
        held.push(&line, start, &mut out).unwrap();
        assert_eq!(out.len(), lines_per_batch * line.len());
        assert!(out.chunks(line.len()).all(|chunk| chunk == line));
        assert!(held.bytes.is_empty());
    }

    #[test]
    fn a_held_line_is_written_once_it_is_too_old() {
        let mut held = Held::default();
        let mut out = Vec::new();
        let start = Instant::now();
        held.push(b"first\n", start, &mut out).unwrap();
        held.push(b"second\n", start + MAX_HOLD / 2, &mut out)
            .unwrap();
        assert!(out.is_empty());
        held.push(b"third\n", start + MAX_HOLD, &mut out).unwrap();
        assert_eq!(out, b"first\nsecond\nthird\n");
    }

    #[test]
    fn writing_what_is_held_empties_it_and_restarts_the_clock() {
        let mut held = Held::default();
        let mut out = Vec::new();
        let start = Instant::now();
        held.push(b"one\n", start, &mut out).unwrap();
        held.write_to(&mut out).unwrap();
        assert_eq!(out, b"one\n");
        held.push(b"two\n", start + MAX_HOLD * 3, &mut out).unwrap();
        assert_eq!(out, b"one\n", "a fresh line starts a fresh hold");
    }
}
