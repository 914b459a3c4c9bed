fn main() -> std::process::ExitCode {
    kiln_cli::main()
}

#[path = "cli/mod.rs"]
mod kiln_cli;
