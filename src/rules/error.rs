//! Errors of rules files: where (file, line, column) and what was expected.

use std::fmt;
use std::path::PathBuf;

/// One problem in a rules file. `line` and `column` are 1-based; 0 means the
/// problem concerns the whole file (a missing key of the top-level mapping, a
/// file that could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Why rules could not be loaded. The CLI maps every variant to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, type or meaning errors; every one found, in file order.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(p: &[Problem]) -> String {
    let lines: Vec<String> = p.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl RulesError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Io { .. } => &[],
            RulesError::Invalid(p) => p,
        }
    }
}

/// Collects problems while a file is checked.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn at(&mut self, file: &str, loc: serde_saphyr::Location, message: impl Into<String>) {
        self.list.push(Problem {
            file: file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    pub fn whole(&mut self, file: &str, message: impl Into<String>) {
        self.list.push(Problem {
            file: file.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
        });
    }

    pub fn into_result(mut self) -> Result<(), RulesError> {
        if self.list.is_empty() {
            Ok(())
        } else {
            self.list
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(RulesError::Invalid(self.list))
        }
    }
}
