//! The operator's side of a command attached to a host (`vpsup exec`,
//! `vpsup logs`): this process's stdin, stdout and stderr, and its terminal
//! when it has one (raw mode while a remote terminal drives it, its size).

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::transport::{OutputSink, OutputStream};

/// Whether both stdin and stdout are a terminal: then a remote command gets
/// one too (what `ssh` does for an interactive session).
pub fn is_interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The terminal's `(columns, rows)`, when stdout is one.
pub fn size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a `winsize` on a valid descriptor, else fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then(|| (u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// The terminal's new size each time it is resized (SIGWINCH).
pub fn resizes() -> Option<mpsc::Receiver<(u32, u32)>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).ok()?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = size() {
                if tx.send(size).await.is_err() {
                    break;
                }
            }
        }
    });
    Some(rx)
}

/// `$TERM`, for the remote terminal [default: xterm-256color].
pub fn term() -> String {
    std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "xterm-256color".to_string())
}

/// The local terminal in raw mode (keys go to the remote terminal as they
/// are typed, Ctrl-C included) until this is dropped.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// `None` when stdin is no terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios they fill.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` read from the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// This process's stdin, chunk by chunk as it comes; the receiver ends at
/// EOF. Read on a thread of its own, never waited for: a read blocked on a
/// terminal must not keep vpsup from exiting when the command is done.
pub fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Writes a remote command's output to this process's stdout and stderr as
/// it arrives, unchanged.
pub fn passthrough() -> OutputSink {
    Arc::new(|stream, data| {
        // A closed stdout (a pager quit) is no reason to fail the command.
        let _ = match stream {
            OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            OutputStream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(data).and_then(|()| err.flush())
            }
        };
    })
}
