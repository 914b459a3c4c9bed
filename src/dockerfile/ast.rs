//! The raw syntax tree, as BuildKit's parser builds it: one [`Node`] per instruction,
//! with the keyword lowercased, the `--flags`, the arguments split by the instruction's
//! own rule, heredoc bodies, and the source lines it came from. Nothing is expanded or
//! unquoted here (but for JSON arrays and flags), so the tree can be dumped in BuildKit's
//! format byte for byte.

/// A heredoc attached to an instruction (`<<EOF` ... `EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heredoc {
    /// The delimiter word, without quotes.
    pub name: String,
    /// `N` in `N<<EOF` (0 when absent: standard input).
    pub file_descriptor: u32,
    /// False when the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from each body line.
    pub chomp: bool,
    /// The body, each line ending in `\n`.
    pub content: String,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The keyword as written, lowercased (`From` → `from`). Unknown keywords are kept:
    /// rejecting them is the typed layer's job, as in BuildKit.
    pub keyword: String,
    /// Leading `--flag` / `--flag=value` words, unquoted.
    pub flags: Vec<String>,
    /// The arguments, split by the instruction's rule. For ENV and LABEL these are
    /// (key, value, separator) triples, flattened.
    pub args: Vec<String>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// The logical line as assembled from its physical lines (continuations joined).
    pub original: String,
    /// Heredocs, in the order they were declared on the line.
    pub heredocs: Vec<Heredoc>,
    /// 1-based first and last physical line (a heredoc body counts as part of it).
    pub start_line: usize,
    pub end_line: usize,
    /// For ONBUILD: the wrapped instruction.
    pub inner: Option<Box<Node>>,
    /// The comment lines just above the instruction, `#` and surrounding blanks
    /// removed (BuildKit's `PrevComment`: an empty `#` line clears the list;
    /// blank lines do not). Doc comments of FROM and ARG come from here.
    pub comments: Vec<String>,
}

/// A parser directive found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name.
    pub name: String,
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// Something worth telling the user that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
    /// A longer explanation (BuildKit's `Detail`), empty when there is none.
    pub detail: String,
    /// Where the rule is documented, empty when nowhere.
    pub url: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    pub directives: Vec<Directive>,
    /// The escape character in force (`\` unless `# escape=` says otherwise).
    pub escape: char,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// The value of a directive, if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}
