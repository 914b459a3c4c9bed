//! Placeholder until the parser branch lands: BuildKit's dump format.
use super::Ast;
pub fn dump(_ast: &Ast) -> String {
    String::new()
}
