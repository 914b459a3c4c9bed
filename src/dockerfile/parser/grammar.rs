//! The pest parser generated from `grammar/dockerfile.pest`, and the choice of
//! entry rule for the escape character in force.

use pest::iterators::Pairs;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "grammar/dockerfile.pest"]
pub(crate) struct DockerfileGrammar;

/// The rules whose variants differ only by the escape character they push.
#[derive(Clone, Copy)]
pub(crate) enum Entry {
    File,
    Line,
    Words,
}

/// Parse `input` from one of the escape-dependent entry rules, and return the
/// pairs inside the entry rule's own pair.
pub(crate) fn parse_with_escape(
    entry: Entry,
    escape: char,
    input: &str,
) -> Result<Pairs<'_, Rule>, Box<pest::error::Error<Rule>>> {
    let rule = match (entry, escape == '`') {
        (Entry::File, false) => Rule::file_backslash,
        (Entry::File, true) => Rule::file_backtick,
        (Entry::Line, false) => Rule::line_backslash,
        (Entry::Line, true) => Rule::line_backtick,
        (Entry::Words, false) => Rule::words_backslash,
        (Entry::Words, true) => Rule::words_backtick,
    };
    parse(rule, input)
}

/// Parse `input` from `rule` and return the pairs inside the rule's own pair.
pub(crate) fn parse(
    rule: Rule,
    input: &str,
) -> Result<Pairs<'_, Rule>, Box<pest::error::Error<Rule>>> {
    let mut pairs = DockerfileGrammar::parse(rule, input).map_err(Box::new)?;
    // A successful parse always yields the entry rule's pair; an empty
    // iterator stands in for it should that ever not hold.
    Ok(match pairs.next() {
        Some(pair) => pair.into_inner(),
        None => pairs,
    })
}
