//! Why a line of iptables-save text is not one: kept with the line in the model
//! (`Unreadable`), shown to the operator as it is by import-iptables.

use super::lexer::UnterminatedQuote;

/// Why a line is not an iptables-save line. The texts are shown to the operator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error(transparent)]
    Quote(#[from] UnterminatedQuote),
    #[error("not an iptables-save line")]
    NotARule,
    #[error("{0} without a value")]
    NoValue(String),
    #[error("a lone \"!\"")]
    LoneBang,
    #[error("a rule without a chain")]
    NoChain,
    #[error("-N without a chain")]
    NewChainWithoutName,
}
