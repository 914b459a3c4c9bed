mod cli;

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`kiln images | head`), as Unix tools do, instead of
    // panicking on the failed write.
    // SAFETY: resetting a signal disposition to its default at start-up, before any
    // thread exists, has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
