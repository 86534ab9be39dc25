//! `--watch`: a listing redrawn in place every interval until Ctrl-C (or SIGTERM, SIGHUP),
//! like watch(1). On a terminal each frame replaces the last on the alternate screen, cut to
//! the screen's size so that nothing scrolls; the terminal is given back as it was on exit.
//! A node that does not answer is said so in the frame, and asked again next time: the
//! operator watching a failover wants to see it come back, not a shell prompt.

use std::fmt::Write as _;
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::output::out;

pub(super) const DEFAULT_INTERVAL: &str = "1s";
/// Faster than this only loads the node.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// However short the interval, a frame may wait this long for its answer.
const MIN_FRAME_LIMIT: Duration = Duration::from_secs(2);

// The escape sequences of every terminal watch(1) runs on (VT100 and xterm).
const ALTERNATE_SCREEN: &str = "\x1b[?1049h";
const NORMAL_SCREEN: &str = "\x1b[?1049l";
const HIDE_CURSOR: &str = "\x1b[?25l";
const SHOW_CURSOR: &str = "\x1b[?25h";
const HOME: &str = "\x1b[H";
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

/// How long each frame may wait for its answer, for an interval.
pub(super) fn frame_limit(interval: Duration) -> Duration {
    interval.max(MIN_FRAME_LIMIT)
}

/// Draws `what`'s frame every `interval`, until a signal to stop. `frame` gives the text of
/// one frame, or why there is none this time.
pub(super) async fn watch<F, Fut>(
    what: &str,
    interval: Duration,
    mut frame: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    if interval < MIN_INTERVAL {
        bail!(
            "--interval {}ms is too short; it must be at least {}ms",
            interval.as_millis(),
            MIN_INTERVAL.as_millis()
        );
    }
    // Handlers first: a Ctrl-C from here on ends the loop, so the terminal is restored.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let limit = frame_limit(interval);
    let screen = Screen::enter();
    loop {
        let start = Instant::now();
        let body = tokio::select! {
            answer = tokio::time::timeout(limit, frame()) => match answer {
                Ok(Ok(text)) => text,
                Ok(Err(e)) => format!("{e:#}\n\n(asking again every {})\n", seconds(interval)),
                Err(_) => format!(
                    "no answer within {}\n\n(asking again every {})\n",
                    seconds(limit),
                    seconds(interval)
                ),
            },
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        };
        screen.draw(&header(what, interval), &body);
        tokio::select! {
            () = tokio::time::sleep_until(start + interval) => {}
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => break,
        }
    }
    drop(screen);
    Ok(())
}

fn header(what: &str, interval: Duration) -> String {
    format!(
        "every {}: {what}    {}    (Ctrl-C to stop)",
        seconds(interval),
        utc_clock(SystemTime::now())
    )
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `14:03:07 UTC`: enough to see that the frame is fresh.
fn utc_clock(t: SystemTime) -> String {
    let s = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s % 3600 / 60, s % 60)
}

/// Where the frames go: a terminal (redrawn in place) or anything else (appended).
struct Screen {
    terminal: bool,
}

impl Screen {
    fn enter() -> Screen {
        let terminal = std::io::stdout().is_terminal();
        if terminal {
            out!("{ALTERNATE_SCREEN}{HIDE_CURSOR}");
        }
        Screen { terminal }
    }

    fn draw(&self, header: &str, body: &str) {
        if !self.terminal {
            out!("{header}\n\n{body}\n");
            return;
        }
        let size = rustix::termios::tcgetwinsize(std::io::stdout())
            .ok()
            .filter(|w| w.ws_row > 0 && w.ws_col > 0)
            .map(|w| (usize::from(w.ws_row), usize::from(w.ws_col)));
        out!("{}", frame(header, body, size));
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.terminal {
            out!("{SHOW_CURSOR}{NORMAL_SCREEN}");
        }
    }
}

/// One frame for a terminal of `size` (rows, columns): from the top left, each line cleared
/// to its end, the rest of the screen cleared. Lines are cut to the width, and the frame to
/// one row less than the height, so that the terminal never scrolls.
fn frame(header: &str, body: &str, size: Option<(usize, usize)>) -> String {
    let lines: Vec<&str> = std::iter::once(header)
        .chain(std::iter::once(""))
        .chain(body.lines())
        .collect();
    let (rows, cols) = size.unwrap_or((usize::MAX, usize::MAX));
    let room = rows.saturating_sub(1).max(1);
    let mut text = String::from(HOME);
    for (i, line) in lines.iter().enumerate() {
        if i + 1 == room && lines.len() > room {
            let more = lines.len() - i;
            let note = format!("... {more} more lines (a taller terminal shows them)");
            let _ = write!(text, "{}{CLEAR_LINE}\r\n", cut(&note, cols));
            break;
        }
        let _ = write!(text, "{}{CLEAR_LINE}\r\n", cut(line, cols));
    }
    text.push_str(CLEAR_BELOW);
    text
}

fn cut(line: &str, cols: usize) -> &str {
    match line.char_indices().nth(cols) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_fits_the_screen() {
        let body = "a\nbb\nccc\ndddd\n";
        let f = frame("head", body, Some((5, 3)));
        assert_eq!(
            f,
            format!(
                "{HOME}hea{CLEAR_LINE}\r\n{CLEAR_LINE}\r\na{CLEAR_LINE}\r\n...{CLEAR_LINE}\r\n{CLEAR_BELOW}"
            )
        );
        let all = frame("head", body, None);
        assert_eq!(all.matches("\r\n").count(), 6);
        assert!(all.contains("dddd"));
    }

    #[test]
    fn clock_and_intervals() {
        let t = UNIX_EPOCH + Duration::from_secs(3 * 86_400 + 14 * 3600 + 3 * 60 + 7);
        assert_eq!(utc_clock(t), "14:03:07 UTC");
        assert_eq!(seconds(Duration::from_secs(1)), "1s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
        assert_eq!(frame_limit(Duration::from_millis(500)), MIN_FRAME_LIMIT);
        assert_eq!(frame_limit(Duration::from_secs(5)), Duration::from_secs(5));
    }
}
