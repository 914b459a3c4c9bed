//! Pseudo-terminals for `-t`: a pty pair, kiln's own terminal in raw mode while attached
//! (restored when the guard drops, on error paths too), the window size copied to the pty
//! at start and on SIGWINCH, and the threads that copy between kiln's streams and the
//! master.

use super::RuntimeError;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Both ends of a new pty.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    pub fn open() -> Result<Pty, RuntimeError> {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty fills the two ints; the name, termios and winsize are optional.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(RuntimeError::Setup(format!(
                "allocating a pseudo-terminal: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: openpty succeeded: both are fresh descriptors we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        for fd in [&master, &slave] {
            // SAFETY: setting FD_CLOEXEC on our own descriptor.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(Pty { master, slave })
    }
}

/// A terminal in raw mode until dropped; a no-op when `fd` is not a terminal.
pub struct RawMode {
    fd: RawFd,
    saved: Option<libc::termios>,
}

impl RawMode {
    pub fn enter(fd: RawFd) -> RawMode {
        // SAFETY: termios is plain data; tcgetattr fills it or fails on a non-terminal.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return RawMode { fd, saved: None };
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct we own; tcsetattr applies it to the terminal.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        RawMode {
            fd,
            saved: Some(saved),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restores the settings read in `enter`.
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, t) };
        }
    }
}

static WINCH_FROM: AtomicI32 = AtomicI32::new(-1);
static WINCH_TO: AtomicI32 = AtomicI32::new(-1);

fn copy_window_size(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; both ioctls only read or write it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

extern "C" fn on_winch(_: libc::c_int) {
    let (from, to) = (
        WINCH_FROM.load(Ordering::SeqCst),
        WINCH_TO.load(Ordering::SeqCst),
    );
    if from >= 0 && to >= 0 {
        // ioctl is async-signal-safe.
        copy_window_size(from, to);
    }
}

/// Copy the size of the terminal `from` to the pty `master` now and whenever it changes.
pub fn follow_window_size(master: RawFd, from: RawFd) {
    copy_window_size(from, master);
    WINCH_FROM.store(from, Ordering::SeqCst);
    WINCH_TO.store(master, Ordering::SeqCst);
    // SAFETY: the handler only reads atomics and calls ioctl.
    unsafe { libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t) };
}

fn dup_file(fd: &OwnedFd) -> Option<std::fs::File> {
    fd.try_clone().ok().map(std::fs::File::from)
}

/// Copy kiln's stdin into the pty, in a thread that ends with stdin (or the pty).
pub fn copy_in(master: &OwnedFd) {
    let Some(mut m) = dup_file(master) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if m.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

/// Copy what the pty prints to `out` until every slave is closed (EIO on Linux).
pub fn copy_out(
    master: &OwnedFd,
    mut out: Box<dyn Write + Send>,
) -> Option<std::thread::JoinHandle<()>> {
    let mut m = dup_file(master)?;
    Some(std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match m.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let _ = out.flush();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }))
}
