//! Text → typed instructions. `dockerfile` owns the grammar (`grammar/dockerfile.pest`),
//! the raw syntax tree with line spans ([`ast`]), BuildKit's dump format ([`dump`]), the
//! word expansion applied to ARG/ENV values ([`expand`]), and the typed [`instruction`]s
//! that everything downstream matches on. It imports nothing else of kiln's.

pub mod ast;
pub mod dump;
pub mod error;
pub mod expand;
pub mod instruction;
pub mod parser;

pub use ast::{Ast, Heredoc, Node};
pub use error::Error;
pub use parser::parse;
