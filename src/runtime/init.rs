//! `--init`: the container's PID 1 is a tiny reaper of kiln's own (no binary in the image
//! needed). The command process, instead of exec'ing the command, forks it as PID 2, then
//! forwards every signal it gets to it, reaps every zombie reparented to it, and exits with
//! the command's code once the command is gone (the kernel then ends the rest of the PID
//! namespace).
//!
//! The reaper is a fork of kiln, not an exec: its argument and environment memory would show
//! kiln's host command line and environment (registry tokens among them) in /proc/1, so it
//! overwrites both with its name first.

/// Signals that must stay deliverable to the reaper itself: faults of its own.
const UNBLOCKABLE: [libc::c_int; 8] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// The shell's encoding of how a process ended: its code, or 128 + the signal.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Where the argument and environment strings of this process lie (fields 48 to 51 of
/// /proc/self/stat, counted after the command name, which may hold spaces).
pub fn arg_env_ranges(stat: &str) -> Option<[(usize, usize); 2]> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0], so field n is f[n - 3].
    let n = |i: usize| f.get(i - 3)?.parse::<usize>().ok();
    let (a0, a1, e0, e1) = (n(48)?, n(49)?, n(50)?, n(51)?);
    (a0 < a1 && e0 <= e1).then_some([(a0, a1), (e0, e1)])
}

/// Show as `kiln-init` in /proc/1/cmdline and /proc/1/comm, with an empty /proc/1/environ,
/// and keep the command from reading the rest of kiln's memory through /proc/1/mem.
fn retitle() {
    let name = c"kiln-init";
    // SAFETY: prctls with a valid C string (at most 16 bytes are copied) or integers.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let Some(ranges) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(arg_env_ranges)
    else {
        return;
    };
    let title = name.to_bytes_with_nul();
    for (i, (start, end)) in ranges.into_iter().enumerate() {
        let len = end - start;
        // SAFETY: the kernel reports these ranges as this process's own argument and
        // environment strings, on its (writable) initial stack; nothing reads them later:
        // the reaper uses only the strings prepared before the fork.
        unsafe {
            let p = start as *mut u8;
            std::ptr::write_bytes(p, 0, len);
            if i == 0 && len >= title.len() {
                std::ptr::copy_nonoverlapping(title.as_ptr(), p, title.len());
            }
        }
    }
}

/// Become the reaper: fork the command (`exec` runs in the child and returns only on
/// failure, with the exit code and message), forward signals, reap, return its exit code.
pub(crate) fn run_as_init(exec: &mut dyn FnMut() -> (i32, String)) -> i32 {
    retitle();
    // SAFETY: sigset manipulation on local values, and fork in a single-threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in UNBLOCKABLE {
            libc::sigdelset(&mut set, s);
        }
        // Blocked signals are queued even for PID 1 (whose default actions the kernel
        // would otherwise discard), and sigwaitinfo then takes them one at a time.
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        let child = libc::fork();
        if child < 0 {
            eprintln!("kiln: fork: {}", std::io::Error::last_os_error());
            return 125;
        }
        if child == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            let (code, msg) = exec();
            eprintln!("kiln: {msg}");
            libc::_exit(code);
        }
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 {
                continue;
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            loop {
                let mut st = 0;
                let pid = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == child {
                    return exit_code(st);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_and_environment_ranges_are_found_past_odd_names() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1050".into();
        fields[50 - 3] = "1050".into();
        fields[51 - 3] = "1200".into();
        let stat = format!("42 (a) b (c)) {}", fields.join(" "));
        assert_eq!(arg_env_ranges(&stat), Some([(1000, 1050), (1050, 1200)]));
        assert_eq!(arg_env_ranges("42 (x) S 1 2"), None);
        assert_eq!(arg_env_ranges("no parens"), None);
    }

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
