//! `kiln debug ...`: views of the pipeline's intermediate forms.

use anyhow::Context;
use clap::Subcommand;
use kiln::dockerfile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its syntax tree in BuildKit's dump format.
    Parse {
        /// Also build the typed instructions (this reports unknown instructions, bad flags
        /// and argument errors) and print them instead of the tree.
        #[arg(long)]
        typed: bool,
        /// The Dockerfile; `-` reads standard input.
        file: PathBuf,
    },
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DebugCommand::Parse { typed, file } => parse(&file, typed),
    }
}

fn parse(file: &PathBuf, typed: bool) -> anyhow::Result<ExitCode> {
    let (name, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the Dockerfile from standard input")?;
        ("-".to_string(), text)
    } else {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not valid UTF-8 (byte {})",
                file.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        (file.display().to_string(), text)
    };
    let ast = match dockerfile::parse(&text) {
        Ok(ast) => ast,
        Err(e) => {
            eprintln!("error: {}", e.in_file(name));
            return Ok(ExitCode::from(1));
        }
    };
    for w in &ast.warnings {
        eprintln!("warning: {name}:{}: {}", w.line, w.message);
    }
    if !typed {
        print!("{}", dockerfile::dump::dump(&ast));
        return Ok(ExitCode::SUCCESS);
    }
    match dockerfile::instruction::lower(&ast) {
        Ok(list) => {
            for located in list {
                println!("{}: {:?}", located.start_line, located.instruction);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", e.in_file(name));
            Ok(ExitCode::from(1))
        }
    }
}
