mod cli;

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`kiln images | head`), as Unix tools do, instead of
    // panicking on the failed write.
    // SAFETY: resetting a signal disposition to its default at start-up, before any
    // thread exists, has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Rootless containers leave files owned by subordinate ids; gc removes those trees
    // inside a user namespace.
    kiln::store::set_foreign_tree_remover(kiln::runtime::remove_foreign_tree);
    cli::main()
}
