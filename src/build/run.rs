//! RUN's command line: shell or exec form, and heredocs, as BuildKit runs them.

use crate::dockerfile::instruction::InlineFile;

/// A file handed to the command at `/dev/pipes/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeFile {
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The heredoc name a command consisting only of `<<NAME` (`<<-NAME`, quoted) refers to.
fn sole_heredoc(text: &str) -> Option<&str> {
    let rest = text.trim().strip_prefix("<<")?;
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = ['\'', '"']
        .iter()
        .find_map(|q| rest.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(rest);
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

fn body(f: &InlineFile) -> String {
    if !f.chomp {
        return f.data.clone();
    }
    f.data
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// argv for a shell-form RUN `text` with heredocs `files`: a command that is one heredoc runs
/// its body (directly when it starts with `#!`, else through the shell); otherwise the
/// bodies follow the command text and the shell reads them as here-documents.
pub fn heredoc_argv(
    shell: &[String],
    text: &str,
    files: &[InlineFile],
) -> (Vec<String>, Vec<PipeFile>) {
    let mut argv: Vec<String> = shell.to_vec();
    if let ([f], Some(name)) = (files, sole_heredoc(text)) {
        if f.name == name {
            let data = body(f);
            if data.starts_with("#!") {
                let file = PipeFile {
                    name: f.name.clone(),
                    data: data.into_bytes(),
                    mode: 0o755,
                };
                return (vec![format!("/dev/pipes/{}", f.name)], vec![file]);
            }
            argv.push(data);
            return (argv, Vec::new());
        }
    }
    let mut script = text.to_string();
    for f in files {
        script.push('\n');
        script.push_str(&f.data);
        if !f.data.is_empty() && !f.data.ends_with('\n') {
            script.push('\n');
        }
        script.push_str(&f.name);
    }
    argv.push(script);
    (argv, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, data: &str, chomp: bool) -> InlineFile {
        InlineFile {
            name: name.into(),
            data: data.into(),
            chomp,
        }
    }

    fn sh() -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into()]
    }

    #[test]
    fn a_sole_heredoc_is_the_script() {
        let (argv, pipes) = heredoc_argv(&sh(), "<<EOF", &[file("EOF", "echo a\necho b\n", false)]);
        assert_eq!(argv, ["/bin/sh", "-c", "echo a\necho b\n"]);
        assert!(pipes.is_empty());
        let (argv, _) = heredoc_argv(&sh(), "<<-'EOT'", &[file("EOT", "\techo\n", true)]);
        assert_eq!(argv, ["/bin/sh", "-c", "echo\n"]);
    }

    #[test]
    fn a_shebang_script_runs_itself() {
        let (argv, pipes) = heredoc_argv(
            &sh(),
            "<<EOF",
            &[file("EOF", "#!/bin/busybox sh\necho hi\n", false)],
        );
        assert_eq!(argv, ["/dev/pipes/EOF"]);
        assert_eq!(pipes[0].mode, 0o755);
        assert_eq!(pipes[0].data, b"#!/bin/busybox sh\necho hi\n");
    }

    #[test]
    fn other_heredocs_go_to_the_shell() {
        let (argv, _) = heredoc_argv(
            &sh(),
            "cat <<A > /a && cat <<B > /b",
            &[file("A", "one\n", false), file("B", "two\n", false)],
        );
        assert_eq!(argv[2], "cat <<A > /a && cat <<B > /b\none\nA\ntwo\nB");
    }
}
