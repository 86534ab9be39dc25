//! Printing for the CLI. `println!` panics when stdout is a closed pipe (`fepha status | head`);
//! a reader that has seen enough is not an error, so the command just ends.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Set once stdout has gone, for a command that cleans up before it ends.
static GONE: AtomicBool = AtomicBool::new(false);
/// Set by such a command: a gone stdout no longer ends the process.
static CLEAN_UP: AtomicBool = AtomicBool::new(false);

pub(super) fn write(args: std::fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = written {
        if CLEAN_UP.load(Ordering::Relaxed) {
            GONE.store(true, Ordering::Relaxed);
            return;
        }
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// For a command that must clean up before it ends (the demo has child processes and files):
/// from now on a stdout that is gone is remembered, for [`stdout_gone`], instead of ending the
/// process.
pub(super) fn clean_up_when_gone() {
    CLEAN_UP.store(true, Ordering::Relaxed);
}

/// Whether stdout has gone: a write failed, or the reader of the pipe or the terminal has
/// hung up. The second is asked of the kernel, so a command that prints nothing for a while
/// still learns at once that `| head` has seen enough.
pub(super) fn stdout_gone() -> bool {
    if GONE.load(Ordering::Relaxed) {
        return true;
    }
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    let hung_up = poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
    if hung_up {
        GONE.store(true, Ordering::Relaxed);
    }
    hung_up
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};
