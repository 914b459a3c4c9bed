//! The one error type of the `dockerfile` module: it names the place.

use std::fmt;

/// An error in a Dockerfile, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file, as the user named it (set by the caller through [`Error::in_file`]).
    pub file: Option<String>,
    /// 1-based line; 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    pub message: String,
    /// The offending source line, shown under the message.
    pub source_line: Option<String>,
    /// A suggestion such as the nearest known instruction.
    pub suggestion: Option<String>,
}

impl Error {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Error {
            file: None,
            line,
            column: 0,
            message: message.into(),
            source_line: None,
            suggestion: None,
        }
    }

    pub fn at_column(mut self, column: usize) -> Self {
        self.column = column;
        self
    }

    pub fn with_source_line(mut self, text: impl Into<String>) -> Self {
        self.source_line = Some(text.into());
        self
    }

    pub fn with_suggestion(mut self, text: impl Into<String>) -> Self {
        self.suggestion = Some(text.into());
        self
    }

    /// Name the file the error was found in.
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("Dockerfile");
        match (self.line, self.column) {
            (0, _) => write!(f, "{file}: {}", self.message)?,
            (l, 0) => write!(f, "{file}:{l}: {}", self.message)?,
            (l, c) => write!(f, "{file}:{l}:{c}: {}", self.message)?,
        }
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean {s}?)")?;
        }
        if let Some(src) = &self.source_line {
            write!(f, "\n {:>4} | {}", self.line, src)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
